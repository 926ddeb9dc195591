package train

import (
	"context"
	"runtime"
	"testing"
)

// Models that are dropped give their memory back: a gateway trains a new
// model every round for months. (gorgonia's tape machines carried a
// finalizer that kept each machine, its graph and its buffers alive
// forever; see releasable.)
func TestTrainingDoesNotLeak(t *testing.T) {
	const rows, cols = 40, 9
	X := make([]float32, rows*cols)
	y := make([]float32, rows)
	for i := range y {
		y[i] = float32(i % 2)
		for j := range cols {
			X[i*cols+j] = float32((i*7+j)%11) / 11
		}
	}
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	trainOnce := func(mlp bool) {
		var (
			m   Trainer
			err error
		)
		if mlp {
			m, err = NewMLP(cols, MLPConfig{Hidden: []int{300, 300}, Activation: "relu"})
		} else {
			m, err = NewLogReg(cols)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Train(context.Background(), X, y, rows, Options{Epochs: 2, LearningRate: 0.01, BatchSize: 16}); err != nil {
			t.Fatal(err)
		}
	}
	for _, mlp := range []bool{false, true} {
		trainOnce(mlp)
		before := heap()
		const n = 10
		for range n {
			trainOnce(mlp)
		}
		// An MLP of 93,901 parameters; each machine held several MB of
		// float64 buffers, so ten leaked ones would show as tens of MB.
		if grew := int64(heap()) - int64(before); grew > 4<<20 {
			t.Errorf("mlp=%v: the heap grew by %d MiB over %d trainings of dropped models", mlp, grew>>20, n)
		}
	}
}
