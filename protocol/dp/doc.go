// Package dp is Cohort's differential privacy: clipping of model updates
// (fixed and adaptive), the Gaussian mechanism (central, or split across
// sites under secure aggregation), and a Rényi DP accountant that turns a
// job's rounds into an (ε, δ) guarantee and enforces its budget. Both the
// site agent and the coordinator import it.
//
// The package is pure: no I/O, no goroutines, no global state. Randomness
// comes from a Source passed in (a seeded *rand.ChaCha8 in tests); a nil
// Source or *Gaussian means NewCryptoSource, a ChaCha8 CSPRNG keyed from
// crypto/rand, which is what production noise must use. Samplers, clippers
// and accountants are not safe for concurrent use.
//
// # Unit of privacy: the site's contribution to a round
//
// Differential privacy compares neighbouring inputs. In record-level DP
// (DP-SGD as in Abadi et al. 2016, Opacus, TF Privacy) neighbours differ in
// one training example and the sample rate is batch size / examples. In
// user-level DP for federated learning (McMahan et al. 2018, Andrew et al.
// 2021) neighbours differ in one participant's entire data. Cohort uses the
// latter with the site (hospital) as the participant: two federations are
// neighbours when one site's data, and hence its whole update in every
// round, is added or removed. Each site clips its update to L2 norm C, so
// the sum over sites has sensitivity C, and the sample rate of the
// accountant is
//
//	q = expected sites sampled per round / sites in the federation,
//
// q = 1 when every site joins every round (no amplification by sampling).
// The analysis assumes Poisson sampling: each site takes part in a round
// independently with probability q. A coordinator that picks a fixed-size
// cohort instead is where Opacus and TF Privacy users who shuffle into
// fixed-size batches are: the Poisson analysis is then an approximation,
// not a proof.
//
// A site-level guarantee protects all of a site's patients together. For
// one patient it holds as follows: a patient's records live at one site,
// so adding, changing or removing them changes that one site's update, a
// replacement rather than an addition or removal of a site, which the
// add/remove guarantee covers as a group of two (an ε about twice as large
// when ε is small). Record-level DP inside a site (per-example clipping
// during local training, DP-SGD) is not part of this package.
//
// The price of site-level DP is that the noise is calibrated to one whole
// site's update against a sum over few sites: with tens of hospitals, a
// useful ε needs either many sites per round or a large noise multiplier.
// The accountant makes that trade-off explicit at planning time.
//
// # Clipping
//
// ClipL2 scales an update in place to L2 norm at most C and reports the
// factor and whether it clipped. The bound holds on the float32 values the
// site actually sends (the rounding of scaled coordinates is corrected
// for); an update holding NaN or ±Inf is refused with ErrNonFinite, since
// its norm, and so its sensitivity, cannot be bounded.
//
// AdaptiveClipper implements adaptive clipping after Andrew, Thakkar,
// McMahan and Ramaswamy, "Differentially Private Learning with Adaptive
// Clipping" (NeurIPS 2021): each site also reports whether its norm was
// within the round's clip (CountBit, centred at ±½); the coordinator
// releases the noised count (noise σ_b), estimates the unclipped fraction
// b̄ and moves the clip geometrically toward the target quantile γ,
// C ← C·exp(−η_C(b̄ − γ)). The count costs privacy: AdjustedNoiseMultiplier
// gives the larger multiplier z_Δ = (z^−2 − (2σ_b)^−2)^−1/2 to use on the
// updates so that update sum and count together cost exactly a Gaussian
// mechanism with the job's stated multiplier z, which is what the
// accountant records. This needs 2σ_b > z; Andrew et al. recommend
// σ_b = m/20 for m expected sites per round, so small federations either
// accept much more noise on the updates or use a fixed clip.
//
// # Gaussian mechanism
//
// Without secure aggregation the coordinator sees the clipped updates,
// sums them and adds N(0, (zC)²) to every coordinate (AddCentralNoise).
//
// With secure aggregation the coordinator only ever sees the sum, so the
// noise must be in it before masking: each site adds N(0, (zC)²/n_min) to
// its clipped update (AddDistributedNoise), and the sum of k ≥ n_min
// shares carries noise of variance (k/n_min)(zC)², at least the central
// mechanism's. If fewer than n_min sites survive dropouts, the unmasked
// sum has less noise than the accountant records: the coordinator must
// refuse to unmask a round with fewer than n_min survivors, and the
// secure-aggregation threshold t must be at least n_min. Sites are trusted
// to add their share; one that does not weakens the others' protection by
// its share only. The adaptive count is split the same way
// (NoisyCountBit).
//
// Noise is drawn in float64 (Marsaglia polar method, 52 random bits per
// uniform) and added to float32 coordinates. As with every floating-point
// DP library, the low-order bits of floating-point noise are not
// themselves analysed (Mironov, CCS 2012); a discrete Gaussian on the
// secure-aggregation integer ring would close that gap and is not
// implemented here.
//
// # Accountant
//
// Accountant composes rounds of the Poisson-subsampled Gaussian mechanism
// with Rényi DP (Mironov, Talwar and Zhang, "Rényi Differential Privacy of
// the Sampled Gaussian Mechanism", 2019), computing RDP at each order as
// TensorFlow Privacy's compute_rdp and Opacus's analysis/rdp.py do (an
// exact log-space binomial sum for integer orders, the erfc series for
// fractional ones) over Opacus's default orders (DefaultOrders: 1.1 … 10.9
// in steps of 0.1, then 12 … 63). RDP adds across rounds, so rounds with
// different noise multipliers or sample rates compose (Step).
//
// Epsilon converts the composed RDP to ε at the job's δ with the improved
// conversion of Balle et al. (2020) that Opacus and TF Privacy report,
//
//	ε = min_α RDP(α) + log((α−1)/α) − (log δ + log α)/(α−1),
//
// and also returns the minimizing order; EpsilonWith(δ, ConversionClassic)
// gives Mironov's (2017) ε = min_α RDP(α) + log(1/δ)/(α−1), which is never
// smaller and matches figures published before 2020. Both are upper
// bounds on the true ε of the mechanism.
//
// The tests check the accountant against published figures (TF Privacy's
// MNIST tutorial table, the Opacus documentation, TF Privacy's own test
// values) within 1%, and the RDP series against direct numerical
// integration of the RDP definition.
//
// # How the coordinator and the agents use it
//
// Planning a job with budget (ε, δ) over R rounds at sample rate q: the
// coordinator computes the noise multiplier with NoiseMultiplierFor (or
// checks an operator-given one with WouldExceed on an empty Accountant for
// R steps) and stores the job's Accountant, and AdaptiveClipper if any, in
// Raft as JSON.
//
// Opening a round: the coordinator calls WouldExceed(budget, δ, z, q, 1)
// and refuses the round when it returns true; otherwise it sends the sites
// the clip C (fixed, or AdaptiveClipper.Clip), the multiplier to noise
// with (z, or z_Δ from AdaptiveClipper.NoiseMultiplier), σ_b and n_min.
//
// At each site: ClipL2(update, C); under secure aggregation also
// AddDistributedNoise and NoisyCountBit before masking, otherwise send the
// clipped update and CountBit.
//
// Closing the round: without secure aggregation the coordinator sums,
// AddCentralNoise and (adaptive) NoisyCount then Update; with secure
// aggregation it unmasks only with at least n_min survivors and feeds the
// unmasked bit sum to Update. Before anything computed from the round is
// released, it records Step(z, q, 1), with the stated z, in Raft, and
// reports Epsilon(δ) in the job's status.
//
// The accountant evaluates the ledger in a fixed order, so replicas with
// the same ledger agree on ε on the same platform; across CPU
// architectures the math library may differ in the last bits, so the
// leader should decide WouldExceed and replicate the decision rather than
// have each replica recompute it.
package dp
