package synth

import (
	"math"
	"testing"
)

func TestScratch(t *testing.T) {
	for _, s := range DefaultSites(4, 1) {
		s.Patients = 5000
		recs, _ := Generate(s, DefaultTruth())
		for k, def := range vitals {
			var n, sum, sq, mn, mx float64
			mn = 1e9
			var ps, pn, ns, nn float64
			for i := range recs {
				val, have := recs[i].lastObserved()
				if !have[k] {
					continue
				}
				v := val[k]
				n++
				sum += v
				sq += v * v
				mn = math.Min(mn, v)
				mx = math.Max(mx, v)
				if recs[i].Septic {
					ps += v
					pn++
				} else {
					ns += v
					nn++
				}
			}
			m := sum / n
			t.Logf("%-9s %-10s obs %.2f mean %6.1f sd %5.1f min %5.1f max %5.1f | septic %6.1f non %6.1f", s.Name, def.name, n/5000, m, math.Sqrt(sq/n-m*m), mn, mx, ps/pn, ns/nn)
		}
	}
}
