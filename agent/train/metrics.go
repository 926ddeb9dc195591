package train

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// logLossEps bounds probabilities away from 0 and 1 in LogLoss, so a
// confident wrong prediction costs about 16 nats instead of infinity.
const logLossEps = 1e-7

// AUROC is the area under the ROC curve of scores against binary labels
// (each exactly 0 or 1), computed as the Mann-Whitney U statistic with
// average ranks for tied scores: the probability that a random positive
// scores above a random negative, ties counting one half.
//
// It fails with ErrShape when the lengths differ, ErrNoRows when they are
// empty, ErrNotFinite for a NaN score, ErrLabel for a label other than 0
// or 1, and ErrOneClass when only one class is present.
func AUROC(scores, labels []float32) (float64, error) {
	if len(scores) != len(labels) {
		return 0, fmt.Errorf("auroc: %w: %d scores, %d labels", ErrShape, len(scores), len(labels))
	}
	if len(scores) == 0 {
		return 0, fmt.Errorf("auroc: %w", ErrNoRows)
	}
	var nPos, nNeg int
	for i, l := range labels {
		switch l {
		case 1:
			nPos++
		case 0:
			nNeg++
		default:
			return 0, fmt.Errorf("auroc: %w: label %d = %v, want 0 or 1", ErrLabel, i, l)
		}
		if math.IsNaN(float64(scores[i])) {
			return 0, fmt.Errorf("auroc: %w: score %d is NaN", ErrNotFinite, i)
		}
	}
	if nPos == 0 || nNeg == 0 {
		return 0, fmt.Errorf("auroc: %w: %d positives, %d negatives", ErrOneClass, nPos, nNeg)
	}

	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(scores[a], scores[b]) })

	// Sum of the (1-based, tie-averaged) ranks of the positives.
	var rankSum float64
	for i := 0; i < len(idx); {
		j := i + 1
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		avg := float64(i+1+j) / 2 // mean of ranks i+1 .. j
		for _, k := range idx[i:j] {
			if labels[k] == 1 {
				rankSum += avg
			}
		}
		i = j
	}
	p, n := float64(nPos), float64(nNeg)
	return (rankSum - p*(p+1)/2) / (p * n), nil
}

// Accuracy is the fraction of rows whose prediction (score >= threshold)
// matches the label (label >= 0.5). It is NaN when the lengths differ or
// are zero.
func Accuracy(scores, labels []float32, threshold float32) float64 {
	if len(scores) != len(labels) || len(scores) == 0 {
		return math.NaN()
	}
	var hit int
	for i, s := range scores {
		if (s >= threshold) == (labels[i] >= 0.5) {
			hit++
		}
	}
	return float64(hit) / float64(len(scores))
}

// LogLoss is the mean binary cross-entropy −[y·ln p + (1−y)·ln(1−p)] of
// probabilities scores against labels, with p clamped to [1e-7, 1−1e-7].
// It is NaN when the lengths differ or are zero, or any input is NaN.
func LogLoss(scores, labels []float32) float64 {
	if len(scores) != len(labels) || len(scores) == 0 {
		return math.NaN()
	}
	var sum float64
	for i, s := range scores {
		p := min(max(float64(s), logLossEps), 1-logLossEps) // NaN stays NaN
		y := float64(labels[i])
		sum -= y*math.Log(p) + (1-y)*math.Log(1-p)
	}
	return sum / float64(len(scores))
}
