package physionet

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// Output files of WriteNDJSON, in the FHIR Bulk Data layout (one resource
// type per file).
const (
	PatientFile     = "Patient.ndjson"
	EncounterFile   = "Encounter.ndjson"
	ObservationFile = "Observation.ndjson.gz"
)

// Code systems written by WriteNDJSON.
const (
	systemUCUM                 = "http://unitsofmeasure.org"
	systemObservationCategory  = "http://terminology.hl7.org/CodeSystem/observation-category"
	systemDischargeDisposition = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
)

// WriteNDJSON writes the records Import would produce, for the stays
// filter accepts (nil: all) admitted at admit (nil: DefaultAdmit), as FHIR
// R4 NDJSON in outDir (created with mode 0700 if absent): PatientFile,
// EncounterFile and ObservationFile (gzip). Reading them back with
// fhir.ReadDir yields exactly the records Import sends to its sink, so the
// same data can be ingested from files or served by a FHIR Bulk Data
// server.
//
// The output is deterministic: the same input gives the same bytes. Files
// are written under temporary names (mode 0600) and renamed into place
// only when all three are complete; on error none is left behind.
func WriteNDJSON(ctx context.Context, dataDir, outDir string, filter func(*Stay) bool, admit func(recordID int) time.Time) (*Stats, error) {
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return NewStats(), fmt.Errorf("ndjson: %w", err)
	}
	names := []string{PatientFile, EncounterFile, ObservationFile}
	var tmps []*os.File
	defer func() {
		for _, f := range tmps {
			if f != nil {
				_ = f.Close()
				_ = os.Remove(f.Name())
			}
		}
	}()
	for _, n := range names {
		f, err := os.CreateTemp(outDir, "."+n+".*.tmp")
		if err != nil {
			return NewStats(), fmt.Errorf("ndjson: %w", err)
		}
		tmps = append(tmps, f)
	}
	pw, ew := bufio.NewWriterSize(tmps[0], 64<<10), bufio.NewWriterSize(tmps[1], 64<<10)
	ob := bufio.NewWriterSize(tmps[2], 64<<10)
	ow := gzip.NewWriter(ob)
	sink := &ndjsonSink{patients: json.NewEncoder(pw), encounters: json.NewEncoder(ew), observations: json.NewEncoder(ow)}

	st, err := Import(ctx, dataDir, admit, filter, sink)
	if err != nil {
		return st, err
	}
	if err := ow.Close(); err != nil {
		return st, fmt.Errorf("ndjson: %w", err)
	}
	for i, w := range []*bufio.Writer{pw, ew, ob} {
		if err := w.Flush(); err != nil {
			return st, fmt.Errorf("ndjson: %w", err)
		}
		if err := tmps[i].Sync(); err != nil {
			return st, fmt.Errorf("ndjson: %w", err)
		}
	}
	for i, f := range tmps {
		if err := f.Close(); err != nil {
			return st, fmt.Errorf("ndjson: %w", err)
		}
		if err := os.Rename(f.Name(), filepath.Join(outDir, names[i])); err != nil {
			return st, fmt.Errorf("ndjson: %w", err)
		}
		tmps[i] = nil
	}
	return st, nil
}

// FHIR R4 JSON shapes written by WriteNDJSON. Field order is fixed by the
// struct, so the output is deterministic.
type (
	jsonCoding struct {
		System  string `json:"system,omitempty"`
		Code    string `json:"code"`
		Display string `json:"display,omitempty"`
	}
	jsonConcept struct {
		Coding []jsonCoding `json:"coding"`
		Text   string       `json:"text,omitempty"`
	}
	jsonReference struct {
		Reference string `json:"reference"`
	}
	jsonPatient struct {
		ResourceType    string `json:"resourceType"`
		ID              string `json:"id"`
		Gender          string `json:"gender,omitempty"`
		BirthDate       string `json:"birthDate,omitempty"`
		DeceasedBoolean bool   `json:"deceasedBoolean"`
	}
	jsonPeriod struct {
		Start string `json:"start"`
		End   string `json:"end,omitempty"`
	}
	jsonHospitalization struct {
		DischargeDisposition *jsonConcept `json:"dischargeDisposition,omitempty"`
	}
	jsonEncounter struct {
		ResourceType    string               `json:"resourceType"`
		ID              string               `json:"id"`
		Status          string               `json:"status"`
		Class           jsonCoding           `json:"class"`
		Subject         jsonReference        `json:"subject"`
		Period          jsonPeriod           `json:"period"`
		Hospitalization *jsonHospitalization `json:"hospitalization,omitempty"`
	}
	jsonQuantity struct {
		Value  float64 `json:"value"`
		Unit   string  `json:"unit"`
		System string  `json:"system"`
		Code   string  `json:"code"`
	}
	jsonObservation struct {
		ResourceType      string        `json:"resourceType"`
		ID                string        `json:"id"`
		Status            string        `json:"status"`
		Category          []jsonConcept `json:"category"`
		Code              jsonConcept   `json:"code"`
		Subject           jsonReference `json:"subject"`
		Encounter         jsonReference `json:"encounter"`
		EffectiveDateTime string        `json:"effectiveDateTime"`
		ValueQuantity     jsonQuantity  `json:"valueQuantity"`
	}
)

// ndjsonSink writes records as FHIR R4 JSON lines.
type ndjsonSink struct {
	patients, encounters, observations *json.Encoder
}

func fhirDateTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func (w *ndjsonSink) Patient(p fhir.Patient) error {
	r := jsonPatient{ResourceType: "Patient", ID: p.ID, Gender: p.Gender, DeceasedBoolean: p.Deceased}
	if !p.BirthDate.IsZero() {
		r.BirthDate = p.BirthDate.UTC().Format(time.DateOnly)
	}
	return w.patients.Encode(r)
}

func (w *ndjsonSink) Encounter(e fhir.Encounter) error {
	r := jsonEncounter{
		ResourceType: "Encounter",
		ID:           e.ID,
		Status:       "finished",
		Class:        jsonCoding{System: EncounterClassSystem, Code: e.Class, Display: "intensive care unit"},
		Subject:      jsonReference{Reference: "Patient/" + e.PatientID},
		Period:       jsonPeriod{Start: fhirDateTime(e.Start)},
	}
	if !e.End.IsZero() {
		r.Period.End = fhirDateTime(e.End)
	}
	if e.Discharge == DischargeExpired {
		r.Hospitalization = &jsonHospitalization{DischargeDisposition: &jsonConcept{
			Coding: []jsonCoding{{System: systemDischargeDisposition, Code: DischargeExpired, Display: "Expired"}},
		}}
	}
	return w.encounters.Encode(r)
}

func (w *ndjsonSink) Observation(o fhir.Observation) error {
	p, ok := lookupLOINC(o.Code)
	if !ok {
		return fmt.Errorf("ndjson: observation code not in the table")
	}
	r := jsonObservation{
		ResourceType: "Observation",
		ID:           o.ID,
		Status:       "final",
		Category: []jsonConcept{{Coding: []jsonCoding{{
			System: systemObservationCategory, Code: p.Category, Display: categoryDisplay(p.Category),
		}}}},
		Code: jsonConcept{
			Coding: []jsonCoding{{System: fhir.SystemLOINC, Code: p.LOINC, Display: p.Display}},
			Text:   p.Name,
		},
		Subject:           jsonReference{Reference: "Patient/" + o.PatientID},
		Encounter:         jsonReference{Reference: "Encounter/" + o.PatientID + "-icu"},
		EffectiveDateTime: fhirDateTime(o.Time),
		ValueQuantity:     jsonQuantity{Value: o.Value, Unit: o.Unit, System: systemUCUM, Code: o.Unit},
	}
	return w.observations.Encode(r)
}

func (w *ndjsonSink) Condition(fhir.Condition) error { return nil }

// categoryDisplay returns the display of an observation category code.
func categoryDisplay(code string) string {
	switch code {
	case CategoryVitalSigns:
		return "Vital Signs"
	case CategoryLaboratory:
		return "Laboratory"
	case CategorySurvey:
		return "Survey"
	case CategoryExam:
		return "Exam"
	case CategoryTherapy:
		return "Therapy"
	}
	return code
}
