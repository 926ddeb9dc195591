package sdc

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSuppress(t *testing.T) {
	for _, tt := range []struct {
		name   string
		counts []uint64
		k      uint64
		want   []bool
	}{
		{"nothing small", []uint64{5, 0, 9}, 5, []bool{false, false, false}},
		{"one small cell takes the smallest other non-empty one", []uint64{12, 0, 3, 7, 9}, 5, []bool{false, false, true, true, false}},
		{"two small cells are enough", []uint64{12, 1, 3, 7}, 5, []bool{false, true, true, false}},
		{"one small cell and nothing else to take", []uint64{0, 2, 0}, 5, []bool{false, true, false}},
		{"ties take the first", []uint64{8, 1, 8}, 5, []bool{true, true, false}},
		{"k of 1 withholds nothing", []uint64{1, 0, 1}, 1, []bool{false, false, false}},
		{"k of 0 withholds nothing", []uint64{1, 2}, 0, []bool{false, false}},
		{"empty table", nil, 5, []bool{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Suppress(tt.counts, tt.k); !slices.Equal(got, tt.want) {
				t.Fatalf("Suppress(%v, %d) = %v, want %v", tt.counts, tt.k, got, tt.want)
			}
		})
	}
}

// TestSuppressLeavesNoLoneCell: on random tables, no released cell is
// under k unless empty, and the withheld cells are never exactly one
// non-empty cell (whose count the total would give away), unless the
// table has no other non-empty cell to withhold.
func TestSuppressLeavesNoLoneCell(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		counts := make([]uint64, r.IntN(8))
		for i := range counts {
			counts[i] = uint64(r.IntN(15))
		}
		k := uint64(r.IntN(8))
		s := Suppress(counts, k)
		withheld, nonEmpty := 0, 0
		for i, c := range counts {
			if c > 0 {
				nonEmpty++
			}
			if s[i] && c > 0 {
				withheld++
			}
			if !s[i] && c > 0 && c < k {
				t.Fatalf("Suppress(%v, %d) = %v releases cell %d", counts, k, s, i)
			}
		}
		if withheld == 1 && nonEmpty > 1 {
			t.Fatalf("Suppress(%v, %d) = %v withholds one non-empty cell alone", counts, k, s)
		}
	}
}
