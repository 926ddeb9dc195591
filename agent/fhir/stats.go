package fhir

// Stats counts what a reader did with its input. Keys are resource types and
// fixed reason strings only, never values from the input. A Stats is not
// safe for concurrent use.
type Stats struct {
	// Resources counts ingested resources by resourceType, once per
	// resource (a blood pressure panel counts once however many
	// Observations it yields).
	Resources map[string]int
	// Skipped counts valid resources the agent does not use: other
	// resource types by type name, and reasons such as "no-numeric-value",
	// "no-loinc-code", "non-patient-subject", "entered-in-error",
	// "entry-without-resource", "duplicate".
	Skipped map[string]int
	// Rejected counts broken input by reason: "malformed-json",
	// "bad-structure", "missing-resource-type", "missing-id", "bad-id",
	// "missing-subject", "missing-code", "bad-value", "bad-time",
	// "missing-time", "oversized", "unknown-unit", "impossible-value",
	// "future-time".
	Rejected map[string]int
}

// NewStats returns an empty Stats.
func NewStats() *Stats {
	return &Stats{
		Resources: map[string]int{},
		Skipped:   map[string]int{},
		Rejected:  map[string]int{},
	}
}

// Add adds other's counts to s. A nil other is a no-op.
func (s *Stats) Add(other *Stats) {
	if other == nil {
		return
	}
	s.init()
	for k, v := range other.Resources {
		s.Resources[k] += v
	}
	for k, v := range other.Skipped {
		s.Skipped[k] += v
	}
	for k, v := range other.Rejected {
		s.Rejected[k] += v
	}
}

// TotalRejected returns the number of rejected resources or lines.
func (s *Stats) TotalRejected() int {
	n := 0
	for _, v := range s.Rejected {
		n += v
	}
	return n
}

// init makes the maps of a zero Stats usable.
func (s *Stats) init() {
	if s.Resources == nil {
		s.Resources = map[string]int{}
	}
	if s.Skipped == nil {
		s.Skipped = map[string]int{}
	}
	if s.Rejected == nil {
		s.Rejected = map[string]int{}
	}
}

// count records the outcome of parsing one resource.
func (s *Stats) count(typ string, err error) {
	s.init()
	if err == nil {
		s.Resources[typ]++
		return
	}
	reason, skipped := Reason(err)
	if reason == "" {
		reason = "malformed-json"
	}
	if !skipped {
		s.Rejected[reason]++
		return
	}
	if reason == "unsupported-type" && validTypeName(typ) {
		reason = typ
	}
	s.Skipped[reason]++
}

// validTypeName reports whether s looks like a FHIR resource type name, so
// that only such names become Stats keys.
func validTypeName(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}
