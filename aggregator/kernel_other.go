//go:build !amd64 || purego

package aggregator

// haveAsm is false: there are no assembly kernels for this architecture,
// or the purego build tag left them out.
const haveAsm = false

// Stand-ins for the assembly kernels, never called: useAsm is false here.

func foldToAVX2(_, _ []float64, _ []float32, _ float64) bool { panic(errNoAsm) }
func foldInAVX2(_ []float64, _ []float32, _ float64)         { panic(errNoAsm) }
func finite32AVX2(_ []float32) bool                          { panic(errNoAsm) }

func foldKAVX2(_, _ []float64, _ [][]float32, _ []float64, _ int, _ bool) bool {
	panic(errNoAsm)
}

const errNoAsm = "aggregator: no assembly kernels in this build"
