package store

import (
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

func TestEncounterAndDeceasedRoundTrip(t *testing.T) {
	s := openMem(t)
	adm := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	died := adm.Add(30 * time.Hour)
	if err := s.Patient(fhir.Patient{ID: "p1", Gender: "female", Deceased: true, DeceasedTime: died}); err != nil {
		t.Fatal(err)
	}
	enc := fhir.Encounter{ID: "e1", PatientID: "p1", Class: "IMP", Start: adm, End: died, Discharge: "exp"}
	for range 2 { // idempotent by id
		if err := s.Encounter(enc); err != nil {
			t.Fatal(err)
		}
	}
	b := s.NewBatch(0)
	if err := b.Encounter(fhir.Encounter{ID: "e0", PatientID: "p1", Class: "AMB", Start: adm.Add(-48 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Encounter(fhir.Encounter{ID: "e2"}); err == nil {
		t.Fatal("an encounter without a patient was accepted")
	}
	var got []fhir.PatientData
	if err := s.ForEachPatient(func(pd fhir.PatientData) error { got = append(got, pd); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d patients", len(got))
	}
	p := got[0]
	if !p.Patient.Deceased || !p.Patient.DeceasedTime.Equal(died) {
		t.Fatalf("patient = %+v", p.Patient)
	}
	if len(p.Encounters) != 2 || p.Encounters[0].Class != "AMB" || p.Encounters[1].Discharge != "exp" ||
		!p.Encounters[1].Start.Equal(adm) || !p.Encounters[1].End.Equal(died) || p.Encounters[1].PatientID != p.Patient.ID {
		t.Fatalf("encounters = %+v", p.Encounters)
	}
	if p.Encounters[1].ID == "e1" {
		t.Fatal("the raw encounter id came back out of the store")
	}
}
