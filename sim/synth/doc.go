// Package synth generates synthetic hospitals for Cohort's simulator and
// tests: seeded, deterministic patient populations written as HL7 FHIR R4
// (bulk-export style NDJSON plus one transaction Bundle).
//
// Each Site describes a hospital's case mix (age, sex, size, missing vitals)
// and a prevalence shift. A shared ground-truth logistic model, Truth, turns
// every patient's true physiological state (age, sex, heart rate,
// respiratory rate, blood pressure, temperature, SpO2, BMI) into a risk of
// sepsis (SNOMED CT 91302008), which is diagnosed as a Condition after the
// vitals were taken. Because the truth is known, tests can compare any
// trained model with the Bayes-optimal ranking.
//
// DefaultSites returns a non-IID federation: sites differ in size, age mix
// and prevalence, so a model trained on one site alone ranks a pooled test
// population noticeably worse than a model trained on all sites together.
// TestSite draws a held-out population from the mixture of several sites.
//
// Every generated patient carries realistic-looking but synthetic, unique
// identifying data (name, MRN, birth date, address, phone, email). The
// Manifest returned by WriteSite lists those values so tests can plant them
// as canaries and prove that none of them ever leaves a site.
//
// The same Site and Truth always produce byte-identical files on the same
// platform: randomness comes from math/rand/v2 PCG streams seeded from
// Site.Seed, times are fixed relative to 2025-01-01T00:00Z, and nothing depends on map
// iteration order.
package synth
