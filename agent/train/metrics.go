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
	nPos, nNeg, err := binaryCounts("auroc", scores, labels)
	if err != nil {
		return 0, err
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

// AUPRC is the area under the precision-recall curve of scores against
// binary labels (each exactly 0 or 1), as average precision (scikit-learn's
// average_precision_score): with the rows ranked by decreasing score, and
// rows of equal score forming one threshold, it is the sum over thresholds
// k of (R_k − R_{k−1})·P_k, where R_k and P_k are the recall and precision
// of calling every row scoring at least the k-th score positive (step-wise
// interpolation; R_0 = 0). Only thresholds that add positives contribute.
// Without a positive it is 0; with only positives, 1. A random ranking
// scores about the positives' share of the rows.
//
// It fails with ErrShape when the lengths differ, ErrNoRows when they are
// empty, ErrNotFinite for a NaN score and ErrLabel for a label other than
// 0 or 1.
func AUPRC(scores, labels []float32) (float64, error) {
	nPos, _, err := binaryCounts("auprc", scores, labels)
	if err != nil || nPos == 0 {
		return 0, err
	}
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })

	var ap float64
	var tp, seen int // positives and rows at or above the current threshold
	for i := 0; i < len(idx); {
		j := i + 1
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		var pos int
		for _, k := range idx[i:j] {
			if labels[k] == 1 {
				pos++
			}
		}
		tp += pos
		seen += j - i
		ap += float64(pos) / float64(nPos) * float64(tp) / float64(seen)
		i = j
	}
	return ap, nil
}

// binaryCounts checks scores and binary labels for metric what and counts
// the positives and negatives.
func binaryCounts(what string, scores, labels []float32) (nPos, nNeg int, err error) {
	if len(scores) != len(labels) {
		return 0, 0, fmt.Errorf("%s: %w: %d scores, %d labels", what, ErrShape, len(scores), len(labels))
	}
	if len(scores) == 0 {
		return 0, 0, fmt.Errorf("%s: %w", what, ErrNoRows)
	}
	for i, l := range labels {
		switch l {
		case 1:
			nPos++
		case 0:
			nNeg++
		default:
			return 0, 0, fmt.Errorf("%s: %w: label %d = %v, want 0 or 1", what, ErrLabel, i, l)
		}
		if math.IsNaN(float64(scores[i])) {
			return 0, 0, fmt.Errorf("%s: %w: score %d is NaN", what, ErrNotFinite, i)
		}
	}
	return nPos, nNeg, nil
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

// Brier is the Brier score of probabilities scores against labels: the
// mean squared error (p − y)² of the predicted risk, 0 for perfect and
// confident predictions, 0.25 for a constant 0.5. It is NaN when the
// lengths differ or are zero, or any input is NaN.
func Brier(scores, labels []float32) float64 {
	if len(scores) != len(labels) || len(scores) == 0 {
		return math.NaN()
	}
	var sum float64
	for i, s := range scores {
		d := float64(s) - float64(labels[i])
		sum += d * d
	}
	return sum / float64(len(scores))
}

// CalibrationBin is one bin of a calibration table: how many rows' scores
// fell in it, how many of those rows were positive, and the sum of their
// scores. SumScores/Count against Positives/Count is one point of a
// reliability diagram (mean predicted risk against observed rate).
type CalibrationBin struct {
	Count     int
	Positives int
	SumScores float64
}

// Calibration sorts probabilities scores into bins equal-width bins over
// [0, 1] and tallies each bin's rows, positives (labels, each exactly 0 or
// 1) and sum of scores. Bin i holds the scores in [i/bins, (i+1)/bins);
// the last bin also holds 1. Each bin's SumScores is at most its Count.
// No rows give bins empty bins.
//
// It fails with ErrShape when the lengths differ or bins < 1, ErrScore for
// a score that is NaN or outside [0, 1], and ErrLabel for a label other
// than 0 or 1.
func Calibration(scores, labels []float32, bins int) ([]CalibrationBin, error) {
	if len(scores) != len(labels) {
		return nil, fmt.Errorf("calibration: %w: %d scores, %d labels", ErrShape, len(scores), len(labels))
	}
	if bins < 1 {
		return nil, fmt.Errorf("calibration: %w: %d bins, want at least 1", ErrShape, bins)
	}
	out := make([]CalibrationBin, bins)
	for i, s := range scores {
		p := float64(s)
		if !(p >= 0 && p <= 1) { // also catches NaN
			return nil, fmt.Errorf("calibration: %w: score %d", ErrScore, i)
		}
		if labels[i] != 0 && labels[i] != 1 {
			return nil, fmt.Errorf("calibration: %w: label %d = %v, want 0 or 1", ErrLabel, i, labels[i])
		}
		// p·bins is exact in float64 for a float32 p (24 significant
		// bits) and up to 2^29 bins, so a score on an edge lands in the
		// bin the edge opens.
		b := min(int(p*float64(bins)), bins-1)
		out[b].Count++
		out[b].SumScores += p
		if labels[i] == 1 {
			out[b].Positives++
		}
	}
	return out, nil
}
