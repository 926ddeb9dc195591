package secagg

import (
	"fmt"
	"math"
)

// Encode clips update to [-ClipRange, ClipRange] coordinate by coordinate
// and encodes it as fixed-point integers modulo 2^32: round(x·Scale) in
// two's complement. ±Inf clip to ±ClipRange; a NaN is an error. The length
// must be VectorLength.
func (c Config) Encode(update []float32) ([]uint32, error) {
	out := make([]uint32, len(update))
	if err := c.encodeInto(out, update); err != nil {
		return nil, err
	}
	return out, nil
}

func (c Config) encodeInto(out []uint32, update []float32) error {
	if len(update) != c.VectorLength {
		return fmt.Errorf("%w: update has %d values, config says %d", ErrMalformed, len(update), c.VectorLength)
	}
	lim := c.maxMagnitude()
	for i, x := range update {
		v := float64(x)
		if math.IsNaN(v) {
			return fmt.Errorf("%w: coordinate %d", ErrNotFinite, i)
		}
		q := math.Round(v * c.Scale)
		// Clip after scaling so that |q| ≤ round(c·Scale) holds exactly.
		q = min(max(q, -lim), lim)
		out[i] = uint32(int32(q))
	}
	return nil
}

// Decode reads a sum of encoded updates (modulo 2^32) as two's-complement
// integers and scales them back. It is exact as long as the sum did not
// wrap, which ValidateFor guarantees for up to n clipped updates.
func (c Config) Decode(sum []uint32) []float64 {
	out := make([]float64, len(sum))
	for i, s := range sum {
		out[i] = float64(int32(s)) / c.Scale
	}
	return out
}
