package dp

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestClipL2(t *testing.T) {
	tests := []struct {
		name        string
		v           []float32
		clip        float64
		wantClipped bool
		wantScale   float64
		want        []float32
	}{
		{"below", []float32{0.3, 0.4}, 1, false, 1, []float32{0.3, 0.4}},
		{"at the bound", []float32{3, 4}, 5, false, 1, []float32{3, 4}},
		{"above", []float32{3, 4}, 1, true, 0.2, []float32{0.6, 0.8}},
		{"zero vector", []float32{0, 0, 0}, 1, false, 1, []float32{0, 0, 0}},
		{"empty", nil, 1, false, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := slices.Clone(tt.v)
			scale, clipped, err := ClipL2(v, tt.clip)
			if err != nil {
				t.Fatal(err)
			}
			if clipped != tt.wantClipped || math.Abs(scale-tt.wantScale) > 1e-6 {
				t.Fatalf("(scale, clipped) = (%v, %v), want (%v, %v)", scale, clipped, tt.wantScale, tt.wantClipped)
			}
			for i := range v {
				if math.Abs(float64(v[i]-tt.want[i])) > 1e-6 {
					t.Fatalf("v = %v, want %v", v, tt.want)
				}
			}
			if n := L2Norm(v); n > tt.clip {
				t.Fatalf("norm %v above clip %v", n, tt.clip)
			}
		})
	}
}

func TestClipL2Rejects(t *testing.T) {
	for _, clip := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if _, _, err := ClipL2([]float32{1}, clip); !errors.Is(err, ErrInvalidParameter) {
			t.Errorf("clip %v: err = %v, want ErrInvalidParameter", clip, err)
		}
	}
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		v := []float32{1, bad, 2}
		if _, _, err := ClipL2(v, 1); !errors.Is(err, ErrNonFinite) {
			t.Errorf("update with %v: err = %v, want ErrNonFinite", bad, err)
		}
		if v[0] != 1 || v[2] != 2 {
			t.Errorf("refused update was modified: %v", v)
		}
	}
}

// TestClipL2NeverExceeds checks the bound the noise is calibrated to holds
// after float32 rounding, for random updates across magnitudes, and that
// clipping preserves the direction.
func TestClipL2NeverExceeds(t *testing.T) {
	r := rand.New(rand.NewChaCha8([32]byte{1}))
	for trial := range 2000 {
		n := 1 + r.IntN(300)
		mag := math.Pow(10, r.Float64()*60-30)
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * mag)
		}
		orig := slices.Clone(v)
		clip := math.Pow(10, r.Float64()*60-30)
		scale, clipped, err := ClipL2(v, clip)
		if err != nil {
			t.Fatal(err)
		}
		norm := L2Norm(v)
		if norm > clip {
			t.Fatalf("trial %d: norm %v above clip %v after clipping", trial, norm, clip)
		}
		if clipped != (L2Norm(orig) > clip) {
			t.Fatalf("trial %d: clipped=%v for norm %v and clip %v", trial, clipped, L2Norm(orig), clip)
		}
		if clipped && norm < clip*(1-1e-5) && scale != 0 {
			t.Fatalf("trial %d: clipped to %v, well below %v", trial, norm, clip)
		}
		if !clipped {
			continue
		}
		for i := range v {
			want := float64(orig[i]) * scale
			if d := math.Abs(float64(v[i]) - want); d > 1e-6*math.Abs(want)+1e-44 {
				t.Fatalf("trial %d: coordinate %d is %v, want %v·%v", trial, i, v[i], orig[i], scale)
			}
		}
	}
}
