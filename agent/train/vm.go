package train

import (
	"runtime"
	"sync"

	"gorgonia.org/gorgonia"
)

// releasable removes the finalizer gorgonia sets on every tape machine.
// Without CUDA it does nothing, but a finalizer on an object that is part
// of a reference cycle (the machine, its program and the graph's nodes
// refer to each other) keeps the whole cycle from ever being collected:
// every trained model leaked its machine's buffers, about 50 MB for a
// million-parameter MLP (TestTrainingDoesNotLeak).
func releasable(vm gorgonia.VM) { runtime.SetFinalizer(vm, nil) }

// buildMu serializes building gorgonia graphs that use operations whose
// constructors touch gorgonia's unguarded globals (see newMLPGraph). It is
// held only while a graph is built, never while one runs.
var buildMu sync.Mutex
