package dp

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// FuzzAccountantState feeds arbitrary bytes to the accountant's JSON
// decoder. It must never panic; it either refuses the input with
// ErrInvalidState or yields a state that re-encodes to the same values
// (and, from then on, to the same bytes).
func FuzzAccountantState(f *testing.F) {
	var a Accountant
	_ = a.Step(1.1, 0.01, 100)
	_ = a.Step(0.7, 0.25, 3)
	seed, _ := json.Marshal(&a)
	f.Add(seed)
	custom, _ := NewAccountant([]float64{1.5, 2, 8, 32})
	_ = custom.Step(2, 1, 5)
	seed, _ = json.Marshal(custom)
	f.Add(seed)
	f.Add([]byte(`{"version":1,"ledger":[]}`))
	f.Add([]byte(`{"version":1,"orders":[2,3.5,64],"ledger":[{"noise_multiplier":0.3,"sample_rate":1,"steps":9007199254740992}]}`))
	f.Add([]byte(`{"version":1,"ledger":[{"noise_multiplier":1e-300,"sample_rate":1e-300,"steps":1}]}`))
	f.Add([]byte(`{"version":1,"ledger":[{"noise_multiplier":1,"sample_rate":0.1,"steps":1},{"noise_multiplier":1,"sample_rate":0.1,"steps":2}]}`))
	f.Add([]byte(`{"version":1,"orders":[1e400],"ledger":null}`))
	f.Add([]byte(`null`))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, in []byte) {
		var got Accountant
		if err := got.UnmarshalJSON(in); err != nil {
			if !errors.Is(err, ErrInvalidState) {
				t.Fatalf("error %v does not wrap ErrInvalidState", err)
			}
			return
		}
		out, err := json.Marshal(&got)
		if err != nil {
			t.Fatalf("decoded state does not encode: %v", err)
		}
		var again Accountant
		if err := again.UnmarshalJSON(out); err != nil {
			t.Fatalf("re-encoded state %s does not decode: %v", out, err)
		}
		if !slices.Equal(again.Ledger(), got.Ledger()) || !slices.Equal(again.Orders(), got.Orders()) {
			t.Fatalf("round trip changed the state:\n%s\n%s", in, out)
		}
		out2, _ := json.Marshal(&again)
		if !bytes.Equal(out, out2) {
			t.Fatalf("encoding is not stable:\n%s\n%s", out, out2)
		}
		// Queries on a decoded state must not panic either.
		if _, _, err := got.Epsilon(1e-5); err != nil {
			t.Fatalf("Epsilon on a decoded state: %v", err)
		}
	})
}
