package fhir

import (
	"sort"
	"sync"
)

// Collector is an in-memory Sink that groups records by patient. Writing a
// record with an id already held replaces it. The zero value is ready to
// use; it is safe for concurrent use.
type Collector struct {
	mu       sync.Mutex
	patients map[string]*collected
}

type collected struct {
	patient Patient
	obs     map[string]Observation
	cond    map[string]Condition
	enc     map[string]Encounter
}

var _ Sink = (*Collector)(nil)

func (c *Collector) get(id string) *collected {
	if c.patients == nil {
		c.patients = map[string]*collected{}
	}
	p := c.patients[id]
	if p == nil {
		p = &collected{patient: Patient{ID: id}, obs: map[string]Observation{}, cond: map[string]Condition{}, enc: map[string]Encounter{}}
		c.patients[id] = p
	}
	return p
}

// Patient implements Sink.
func (c *Collector) Patient(p Patient) error {
	if p.ID == "" {
		return ErrInvalidRecord
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.get(p.ID).patient = p
	return nil
}

// Observation implements Sink.
func (c *Collector) Observation(o Observation) error {
	if o.ID == "" || o.PatientID == "" {
		return ErrInvalidRecord
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.get(o.PatientID).obs[o.ID] = o
	return nil
}

// Condition implements Sink.
func (c *Collector) Condition(cd Condition) error {
	if cd.ID == "" || cd.PatientID == "" {
		return ErrInvalidRecord
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.get(cd.PatientID).cond[cd.ID] = cd
	return nil
}

// Encounter implements Sink.
func (c *Collector) Encounter(e Encounter) error {
	if e.ID == "" || e.PatientID == "" {
		return ErrInvalidRecord
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.get(e.PatientID).enc[e.ID] = e
	return nil
}

// Patients returns every patient seen, sorted by patient id, with
// observations sorted by time (then code, then id) and conditions by onset
// (then id). A patient known only from its observations or conditions has
// a Patient with just its ID set.
func (c *Collector) Patients() []PatientData {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]PatientData, 0, len(c.patients))
	for _, e := range c.patients {
		pd := PatientData{Patient: e.patient}
		for _, o := range e.obs {
			pd.Observations = append(pd.Observations, o)
		}
		for _, cd := range e.cond {
			pd.Conditions = append(pd.Conditions, cd)
		}
		for _, en := range e.enc {
			pd.Encounters = append(pd.Encounters, en)
		}
		SortRecords(&pd)
		out = append(out, pd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Patient.ID < out[j].Patient.ID })
	return out
}

// SortRecords sorts pd's observations by time, then code, then id, its
// conditions by onset, then id, and its encounters by start, then id, so
// that grouped records have one order.
func SortRecords(pd *PatientData) {
	sort.Slice(pd.Observations, func(i, j int) bool {
		a, b := pd.Observations[i], pd.Observations[j]
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		if a.Code != b.Code {
			return a.Code < b.Code
		}
		return a.ID < b.ID
	})
	sort.Slice(pd.Conditions, func(i, j int) bool {
		a, b := pd.Conditions[i], pd.Conditions[j]
		if !a.Onset.Equal(b.Onset) {
			return a.Onset.Before(b.Onset)
		}
		return a.ID < b.ID
	})
	sort.Slice(pd.Encounters, func(i, j int) bool {
		a, b := pd.Encounters[i], pd.Encounters[j]
		if !a.Start.Equal(b.Start) {
			return a.Start.Before(b.Start)
		}
		return a.ID < b.ID
	})
}
