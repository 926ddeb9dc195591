// Package sdc is statistical disclosure control for the count tables a
// site sends and the coordinator releases (analytics histograms,
// calibration bins of an evaluation): small cells are withheld so that
// no table singles out a handful of patients. It is one rule, shared by
// both sides so that what a site withholds and what the coordinator
// withholds from the pooled table agree.
package sdc

// Suppress returns which cells of a table of counts to withhold when the
// table is released together with its total. Withheld are every cell with
// fewer than k units but not none and, when that is exactly one cell, the
// smallest other non-empty cell too (complementary suppression): the
// total minus the released cells would otherwise give the lone withheld
// cell's count. Empty cells are released; they say nothing about anyone.
// With k <= 1 nothing is withheld.
func Suppress(counts []uint64, k uint64) []bool {
	out := make([]bool, len(counts))
	small, smallest := 0, -1
	for i, c := range counts {
		switch {
		case c > 0 && c < k:
			out[i] = true
			small++
		case c > 0 && (smallest < 0 || c < counts[smallest]):
			smallest = i
		}
	}
	if small == 1 && smallest >= 0 {
		out[smallest] = true
	}
	return out
}
