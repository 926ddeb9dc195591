package synth

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// Files written by WriteSite.
const (
	// PatientFile holds one Patient resource per line.
	PatientFile = "Patient.ndjson"
	// ObservationFile holds one Observation resource per line, gzipped.
	ObservationFile = "Observation.ndjson.gz"
	// ConditionFile holds one Condition resource per line.
	ConditionFile = "Condition.ndjson"
	// BundleFile is a transaction Bundle with BundlePatients complete
	// patients.
	BundleFile = "bundle-001.json"
	// BundlePatients is how many of a site's patients go into BundleFile
	// instead of the NDJSON files (fewer when the site is smaller).
	BundlePatients = 5
)

// Manifest summarizes what WriteSite wrote. Counts cover the NDJSON files and
// the Bundle together. The identifying values are listed in patient order so
// tests can plant them as canaries; each is unique within the site, and
// names, MRNs, phones, emails and addresses also differ between sites whose
// indexes differ (addresses and phones: indexes that differ modulo 10).
type Manifest struct {
	// Site is the site's Name.
	Site string
	// Patients is the number of Patient resources (Site.Patients).
	Patients int
	// Observations is the number of Observation resources; a blood-pressure
	// panel counts once.
	Observations int
	// Conditions is the number of Condition resources, sepsis included.
	Conditions int
	// Positives is the number of patients with a sepsis Condition.
	Positives int
	// Names are full names, "Given Family"; the family name alone is
	// unique too.
	Names []string
	// MRNs are the medical record numbers.
	MRNs []string
	// Phones are the phone numbers.
	Phones []string
	// Emails are the email addresses.
	Emails []string
	// Addresses are the street lines of the home addresses.
	Addresses []string
	// BirthDates are the birth dates, YYYY-MM-DD; unique within a site of
	// up to a few thousand patients, after which dates may repeat.
	BirthDates []string
	// PatientIDs are the Patient resource ids (random UUIDs, unique), the
	// pseudonymous key by which Observations, Conditions and device
	// telemetry name the patient. They never leave a site either.
	PatientIDs []string
	// LabelFlips is the number of patients whose recorded outcome (a
	// sepsis Condition or none) differs from the truth (Site.LabelNoise).
	LabelFlips int
	// Telemetry is the number of messages in the telemetry file; 0 when
	// none was written.
	Telemetry int
	// Devices are the ids of the bedside monitors in the telemetry file,
	// "BM-<Site.Index>-<nnnn>", in order. They are equipment serials: a
	// monitor serves one patient after another.
	Devices []string
}

// WriteSite generates the site's patients and writes them to dir (created if
// needed) as FHIR R4: PatientFile, ObservationFile and ConditionFile in bulk
// export NDJSON, and BundleFile, a transaction Bundle holding the last
// BundlePatients patients with urn:uuid references. With
// Site.TelemetryMinutes set it also writes the site's bedside-monitor
// telemetry to TelemetryPath(dir); without, it removes a telemetry file
// left there. Existing files of those names are replaced. The same site and
// truth give byte-identical files. Errors wrap ErrInvalidSite or ErrWrite.
func WriteSite(dir string, site Site, truth Truth) (*Manifest, error) {
	recs, err := Generate(site, truth)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrite, err)
	}
	m := &Manifest{Site: site.Name, Patients: len(recs)}
	for i := range recs {
		r := &recs[i]
		m.Names = append(m.Names, r.ident.fullName())
		m.MRNs = append(m.MRNs, r.ident.mrn)
		m.Phones = append(m.Phones, r.ident.phone)
		m.Emails = append(m.Emails, r.ident.email)
		m.Addresses = append(m.Addresses, r.ident.line)
		m.BirthDates = append(m.BirthDates, r.birthDate)
		m.PatientIDs = append(m.PatientIDs, r.ID)
		if r.Septic {
			m.Positives++
		}
		if r.Septic != r.TrueSeptic {
			m.LabelFlips++
		}
	}
	split := len(recs) - min(BundlePatients, len(recs))
	bulk, bundled := recs[:split], recs[split:]

	err = writeFile(filepath.Join(dir, PatientFile), false, func(w io.Writer) error {
		for i := range bulk {
			if err := writeLine(w, patientJSON(&bulk[i], site)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = writeFile(filepath.Join(dir, ObservationFile), true, func(w io.Writer) error {
		for i := range bulk {
			for _, o := range observationsJSON(&bulk[i], patientRefPrefix+bulk[i].ID) {
				if err := writeLine(w, o); err != nil {
					return err
				}
				m.Observations++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = writeFile(filepath.Join(dir, ConditionFile), false, func(w io.Writer) error {
		for i := range bulk {
			for _, c := range conditionsJSON(&bulk[i], patientRefPrefix+bulk[i].ID) {
				if err := writeLine(w, c); err != nil {
					return err
				}
				m.Conditions++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	b, nobs, ncond, err := bundleJSON(bundled, site)
	if err != nil {
		return nil, err
	}
	m.Observations += nobs
	m.Conditions += ncond
	err = writeFile(filepath.Join(dir, BundleFile), false, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(b)
	})
	if err != nil {
		return nil, err
	}

	tpath := TelemetryPath(dir)
	if site.TelemetryMinutes == 0 {
		if err := os.Remove(tpath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %w", ErrWrite, err)
		}
		return m, nil
	}
	if err := os.MkdirAll(filepath.Dir(tpath), 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrite, err)
	}
	err = writeFile(tpath, false, func(w io.Writer) error { return writeTelemetry(w, recs, site, m) })
	if err != nil {
		return nil, err
	}
	return m, nil
}

// bundleJSON builds the transaction Bundle of recs and counts its
// Observations and Conditions.
func bundleJSON(recs []Record, site Site) (b bundleResource, nobs, ncond int, err error) {
	r := rand.New(rand.NewPCG(site.Seed, 0xb0_dd1e)) // #nosec G404 -- seeded synthetic data, reproducible from the site's seed
	b = bundleResource{
		ResourceType: "Bundle",
		ID:           newUUID(r),
		Type:         "transaction",
		Timestamp:    fhirTime(baseTime().AddDate(1, 0, 1)),
		Entry:        []bundleEntry{},
	}
	add := func(id, typ string, res any) error {
		raw, err := json.Marshal(res)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrWrite, err)
		}
		b.Entry = append(b.Entry, bundleEntry{
			FullURL:  bundleRefPrefix + id,
			Resource: raw,
			Request:  bundleRequest{Method: "POST", URL: typ},
		})
		return nil
	}
	for i := range recs {
		rec := &recs[i]
		if err := add(rec.ID, "Patient", patientJSON(rec, site)); err != nil {
			return b, 0, 0, err
		}
		subject := bundleRefPrefix + rec.ID
		for _, o := range observationsJSON(rec, subject) {
			if err := add(o.ID, "Observation", o); err != nil {
				return b, 0, 0, err
			}
			nobs++
		}
		for _, c := range conditionsJSON(rec, subject) {
			if err := add(c.ID, "Condition", c); err != nil {
				return b, 0, 0, err
			}
			ncond++
		}
	}
	return b, nobs, ncond, nil
}

// writeLine writes v as one line of JSON.
func writeLine(w io.Writer, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	raw = append(raw, '\n')
	if _, err := w.Write(raw); err != nil {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	return nil
}

// writeFile creates path and lets fill write its content, gzipped when zip
// is set. The gzip header carries no name or time, so output is
// reproducible.
func writeFile(path string, zip bool, fill func(io.Writer) error) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%w: %w", ErrWrite, cerr)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<16)
	var w io.Writer = bw
	var zw *gzip.Writer
	if zip {
		zw = gzip.NewWriter(bw)
		w = zw
	}
	if err := fill(w); err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return fmt.Errorf("%w: %w", ErrWrite, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	return nil
}
