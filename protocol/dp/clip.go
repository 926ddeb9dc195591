package dp

import "math"

// L2Norm returns the Euclidean norm of v, accumulated in float64. It is NaN
// or +Inf when v holds a non-finite value.
func L2Norm(v []float32) float64 {
	var s float64
	for _, x := range v {
		f := float64(x)
		s += f * f
	}
	return math.Sqrt(s)
}

// ClipL2 scales v in place so that its L2 norm is at most clip, and returns
// the factor applied (1 when v was already within the bound) and whether it
// had to scale. After ClipL2 returns without error, L2Norm(v) <= clip holds
// exactly as computed on the float32 values: the float32 rounding of the
// scaled coordinates is corrected for, so the bound that the noise is
// calibrated to is never exceeded.
//
// clipped == false means the update's norm was <= clip: that is the bit
// b_i an adaptive-clipping round reports (see CountBit).
//
// An update holding NaN or ±Inf is refused with ErrNonFinite and left
// unchanged; its norm cannot be bounded.
func ClipL2(v []float32, clip float64) (scale float64, clipped bool, err error) {
	if err := checkClip(clip); err != nil {
		return 0, false, err
	}
	for _, x := range v {
		if !finite(float64(x)) {
			return 0, false, ErrNonFinite
		}
	}
	norm := L2Norm(v)
	if norm <= clip {
		return 1, false, nil
	}
	scale = clip / norm
	scaleBy(v, scale)
	// Rounding each coordinate to float32 can leave the norm above clip
	// by a relative 2^-24; shrink by a few ulps until it is not. Two passes
	// suffice for normal numbers; the loop bound covers subnormals.
	for range 8 {
		n := L2Norm(v)
		if n <= clip {
			return scale, true, nil
		}
		f := clip / n * (1 - 0x1p-22)
		scaleBy(v, f)
		scale *= f
	}
	// Only reachable with subnormal coordinates against a subnormal-scale
	// clip: zero the update, which trivially respects the bound.
	clear(v)
	return 0, true, nil
}

func scaleBy(v []float32, f float64) {
	for i, x := range v {
		v[i] = float32(float64(x) * f)
	}
}
