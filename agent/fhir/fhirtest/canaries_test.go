package fhirtest

import (
	"slices"
	"testing"
)

func TestFind(t *testing.T) {
	raw := []byte("xx\x00Lemke53\x01999-18-8203yy")
	got := Find(raw, map[string]string{"Lemke53": "name", "999-18-8203": "ssn", "absent": "x"})
	slices.Sort(got)
	if !slices.Equal(got, []string{"name", "ssn"}) {
		t.Fatalf("found %v", got)
	}
}
