package synth

import (
	"encoding/json"
	"strconv"
	"time"
)

// FHIR R4 resources, reduced to the elements this package writes. Struct
// fields (never maps) keep the JSON byte order fixed.

type coding struct {
	System  string `json:"system"`
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
}

type codeableConcept struct {
	Coding []coding `json:"coding"`
	Text   string   `json:"text,omitempty"`
}

type reference struct {
	Reference string `json:"reference"`
}

type quantity struct {
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	System string  `json:"system"`
	Code   string  `json:"code"`
}

type identifier struct {
	Use    string          `json:"use,omitempty"`
	Type   codeableConcept `json:"type"`
	System string          `json:"system"`
	Value  string          `json:"value"`
}

type humanName struct {
	Use    string   `json:"use,omitempty"`
	Family string   `json:"family"`
	Given  []string `json:"given"`
}

type contactPoint struct {
	System string `json:"system"`
	Value  string `json:"value"`
	Use    string `json:"use,omitempty"`
}

type address struct {
	Use        string   `json:"use,omitempty"`
	Line       []string `json:"line"`
	City       string   `json:"city"`
	State      string   `json:"state"`
	PostalCode string   `json:"postalCode"`
	Country    string   `json:"country,omitempty"`
}

type patientResource struct {
	ResourceType string         `json:"resourceType"`
	ID           string         `json:"id"`
	Identifier   []identifier   `json:"identifier"`
	Active       bool           `json:"active"`
	Name         []humanName    `json:"name"`
	Telecom      []contactPoint `json:"telecom"`
	Gender       string         `json:"gender"`
	BirthDate    string         `json:"birthDate"`
	Address      []address      `json:"address"`
}

type component struct {
	Code          codeableConcept `json:"code"`
	ValueQuantity quantity        `json:"valueQuantity"`
}

type observationResource struct {
	ResourceType      string            `json:"resourceType"`
	ID                string            `json:"id"`
	Status            string            `json:"status"`
	Category          []codeableConcept `json:"category"`
	Code              codeableConcept   `json:"code"`
	Subject           reference         `json:"subject"`
	EffectiveDateTime string            `json:"effectiveDateTime"`
	ValueQuantity     *quantity         `json:"valueQuantity,omitempty"`
	Component         []component       `json:"component,omitempty"`
}

type conditionResource struct {
	ResourceType       string            `json:"resourceType"`
	ID                 string            `json:"id"`
	ClinicalStatus     codeableConcept   `json:"clinicalStatus"`
	VerificationStatus codeableConcept   `json:"verificationStatus"`
	Category           []codeableConcept `json:"category"`
	Code               codeableConcept   `json:"code"`
	Subject            reference         `json:"subject"`
	OnsetDateTime      string            `json:"onsetDateTime"`
	RecordedDate       string            `json:"recordedDate"`
}

type bundleRequest struct {
	Method string `json:"method"`
	URL    string `json:"url"`
}

type bundleEntry struct {
	FullURL  string          `json:"fullUrl"`
	Resource json.RawMessage `json:"resource"`
	Request  bundleRequest   `json:"request"`
}

type bundleResource struct {
	ResourceType string        `json:"resourceType"`
	ID           string        `json:"id"`
	Type         string        `json:"type"`
	Timestamp    string        `json:"timestamp"`
	Entry        []bundleEntry `json:"entry"`
}

const (
	systemMRType       = "http://terminology.hl7.org/CodeSystem/v2-0203"
	systemObsCategory  = "http://terminology.hl7.org/CodeSystem/observation-category"
	systemCondClinical = "http://terminology.hl7.org/CodeSystem/condition-clinical"
	systemCondVerify   = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
	systemCondCategory = "http://terminology.hl7.org/CodeSystem/condition-category"
	mrnSystemPrefix    = "urn:oid:2.16.840.1.113883.19.5."
	fhirDateTime       = "2006-01-02T15:04:05Z07:00"
	patientRefPrefix   = "Patient/"
	bundleRefPrefix    = "urn:uuid:"
)

func fhirTime(t time.Time) string { return t.UTC().Format(fhirDateTime) }

// patientJSON builds the Patient resource of rec.
func patientJSON(rec *Record, site Site) patientResource {
	gender := "male"
	if rec.Profile.Female {
		gender = "female"
	}
	id := rec.ident
	return patientResource{
		ResourceType: "Patient",
		ID:           rec.ID,
		Identifier: []identifier{{
			Use:    "usual",
			Type:   codeableConcept{Coding: []coding{{System: systemMRType, Code: "MR", Display: "Medical record number"}}},
			System: mrnSystemPrefix + strconv.Itoa(site.Index),
			Value:  id.mrn,
		}},
		Active: true,
		Name:   []humanName{{Use: "official", Family: id.family, Given: []string{id.given}}},
		Telecom: []contactPoint{
			{System: "phone", Value: id.phone, Use: "home"},
			{System: "email", Value: id.email, Use: "home"},
		},
		Gender:    gender,
		BirthDate: rec.birthDate,
		Address: []address{{
			Use: "home", Line: []string{id.line}, City: id.city, State: id.state,
			PostalCode: id.zip, Country: "US",
		}},
	}
}

// observationsJSON builds the Observation resources of rec, in time order;
// subject is the reference to the patient.
func observationsJSON(rec *Record, subject string) []observationResource {
	category := []codeableConcept{{
		Coding: []coding{{System: systemObsCategory, Code: "vital-signs", Display: "Vital Signs"}},
	}}
	var out []observationResource
	for _, v := range rec.visits {
		for k := range numVitals {
			if !v.have[k] || vital(k) == vDiastolic {
				continue
			}
			def := vitals[k]
			obs := observationResource{
				ResourceType:      "Observation",
				ID:                v.ids[k],
				Status:            "final",
				Category:          category,
				Subject:           reference{subject},
				EffectiveDateTime: fhirTime(v.at),
			}
			if vital(k) == vSystolic {
				obs.Code = loincConcept(loincBPPanel, "Blood pressure panel with all children optional")
				obs.Component = []component{
					{Code: loincConcept(def.loinc, def.display), ValueQuantity: vitalQuantity(vSystolic, v.value[vSystolic])},
					{Code: loincConcept(vitals[vDiastolic].loinc, vitals[vDiastolic].display), ValueQuantity: vitalQuantity(vDiastolic, v.value[vDiastolic])},
				}
			} else {
				obs.Code = loincConcept(def.loinc, def.display)
				q := vitalQuantity(vital(k), v.value[k])
				obs.ValueQuantity = &q
			}
			out = append(out, obs)
		}
	}
	return out
}

// conditionsJSON builds the Condition resources of rec.
func conditionsJSON(rec *Record, subject string) []conditionResource {
	out := make([]conditionResource, 0, len(rec.conditions))
	for _, c := range rec.conditions {
		category := "problem-list-item"
		if c.code == CodeSepsis {
			category = "encounter-diagnosis"
		}
		out = append(out, conditionResource{
			ResourceType:       "Condition",
			ID:                 c.id,
			ClinicalStatus:     codeableConcept{Coding: []coding{{System: systemCondClinical, Code: "active"}}},
			VerificationStatus: codeableConcept{Coding: []coding{{System: systemCondVerify, Code: "confirmed"}}},
			Category:           []codeableConcept{{Coding: []coding{{System: systemCondCategory, Code: category}}}},
			Code: codeableConcept{
				Coding: []coding{{System: SystemSNOMED, Code: c.code, Display: c.display}},
				Text:   c.display,
			},
			Subject:       reference{subject},
			OnsetDateTime: fhirTime(c.onset),
			RecordedDate:  fhirTime(c.onset),
		})
	}
	return out
}

func loincConcept(code, display string) codeableConcept {
	return codeableConcept{Coding: []coding{{System: SystemLOINC, Code: code, Display: display}}, Text: display}
}

func vitalQuantity(v vital, x float64) quantity {
	u := vitals[v].unit
	return quantity{Value: x, Unit: u, System: SystemUCUM, Code: u}
}
