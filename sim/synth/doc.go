// Package synth generates synthetic hospitals for Cohort's simulator and
// tests: seeded, deterministic patient populations written as HL7 FHIR R4
// (bulk-export style NDJSON plus one transaction Bundle), and optionally the
// telemetry of their bedside monitors as the site agent receives it over
// MQTT.
//
// Each Site describes a hospital's case mix (age, sex, size, missing vitals)
// and a prevalence shift. A shared ground-truth logistic model, Truth, turns
// every patient's true physiological state (age, sex, heart rate,
// respiratory rate, blood pressure, temperature, SpO2, BMI) into a risk of
// sepsis (SNOMED CT 91302008), which is diagnosed as a Condition after the
// vitals were taken. Because the truth is known, tests can compare any
// trained model with the Bayes-optimal ranking.
//
// # Heterogeneity knobs
//
// Besides case mix and prevalence, a Site can make its data harder in the
// ways real hospitals do. Each knob's zero value means "none", and a site
// without them gives byte-identical files to one written before they
// existed (testdata/golden.sha256 pins this).
//
//   - Calibration: a miscalibrated monitor. A per-vital offset in raw units,
//     keyed by feature name ("heart_rate", "spo2", ...; see VitalNames),
//     added to every measured value of the vital at the site, charted or
//     streamed.
//   - Noise: extra Gaussian measurement noise, Noise times the vital's
//     scale, on every measured value.
//   - LabelNoise: the probability that the recorded outcome is flipped (a
//     sepsis Condition written for a patient without sepsis, or left out
//     for one with it). Record.TrueSeptic keeps the truth, Record.Septic
//     the recorded label, Manifest.LabelFlips the count.
//   - TelemetryMinutes: write device telemetry (below).
//
// Measured values are still clamped to the physiological range and rounded
// as a device reports them. The knobs act on measurements and labels only:
// each patient's true state, risk and true outcome are those of the same
// site without them, so a test can compare a model trained on distorted
// data with the truth. Their random draws come from per-patient streams of
// their own, which is what leaves everything else unchanged.
//
// DefaultSites returns a non-IID federation: sites differ in size, age mix
// and prevalence, so a model trained on one site alone ranks a pooled test
// population noticeably worse than a model trained on all sites together.
// TestSite draws a held-out population from the mixture of several sites;
// each of its patients is measured and labelled as at the site it was drawn
// from. Site's JSON names (snake_case) let the simulator read sites from
// YAML scenario files with sigs.k8s.io/yaml; Validate's errors name the
// field.
//
// # Device telemetry
//
// With Site.TelemetryMinutes set, WriteSite also writes
// <dir>/device/telemetry.ndjson (TelemetryPath): one Message per line, in
// reading time order,
//
//	{"topic": "cohort/<site>/devices/<device id>/observations",
//	 "payload": {"device_id": "BM-2-0001", "patient": "Patient/<id>",
//	             "time": "2025-01-01T02:24:00Z", "loinc": "8867-4", "value": 78, "unit": "/min"}}
//
// where the payload is a JSON value (not a string) in exactly the format of
// package agent/device, and its bytes are what to publish at QoS 1 on the
// topic; <site> is Site.Name, which must then be the agent's site id.
// Replay streams the file to a publish function (an MQTT client's, for the
// simulator); ReadTelemetry loads it.
//
// Every patient is on a bedside monitor from the start of the encounter
// until, not including, the last charted vitals (so those stay the last
// observed values). Every TelemetryMinutes minutes the monitor reads heart
// rate, respiratory rate, systolic and diastolic pressure, temperature and
// SpO2: the same physiology as the charted vitals, with the same
// measurement error, missingness, calibration offsets and extra noise.
// Monitors are shared: a patient gets the lowest-numbered monitor free at
// the start of the encounter (15 minutes after its last patient), so device
// ids ("BM-<Site.Index>-<nnnn>", Manifest.Devices) are equipment serials,
// not patient keys, and the agent's observation ids (device, time, code)
// never collide. The default academic site (900 patients) with readings
// every 5 minutes gives about 160,000 messages (36 MB) on 4 monitors.
//
// # Identifiers
//
// Every generated patient carries realistic-looking but synthetic, unique
// identifying data (name, MRN, birth date, address, phone, email). The
// Manifest returned by WriteSite lists those values so tests can plant them
// as canaries and prove that none of them ever leaves a site. It also lists
// the Patient resource ids (random UUIDs): the only patient key in the
// telemetry, which carries no direct identifier.
//
// The same Site and Truth always produce byte-identical files on the same
// platform: randomness comes from math/rand/v2 PCG streams seeded from
// Site.Seed, times are fixed relative to 2025-01-01T00:00Z, and nothing
// depends on map iteration order.
package synth
