package aggregator

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	want := []string{"fedadagrad", "fedadam", "fedavg", "fedavgm", "fedprox", "fedyogi", "krum", "median", "multikrum", "trimmedmean"}
	if got := Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %v, want %v", got, want)
	}
	for _, name := range want {
		s, err := New(Spec{Name: name})
		if err != nil {
			t.Errorf("New(%q) with defaults: %v", name, err)
			continue
		}
		if s.Name() != name {
			t.Errorf("New(%q).Name() = %q", name, s.Name())
		}
		if _, err := s.Begin([]float32{1, 2}, nil); err != nil {
			t.Errorf("%s: Begin with defaults: %v", name, err)
		}
	}
}

func TestNewDefaultsAndOverrides(t *testing.T) {
	tests := []struct {
		spec Spec
		want Strategy
	}{
		{Spec{Name: "fedavg"}, FedAvg{}},
		{Spec{Name: "fedprox"}, FedProx{Mu: 0.01}},
		{Spec{Name: "fedprox", Params: map[string]float64{"mu": 0}}, FedProx{Mu: 0}},
		{Spec{Name: "fedavgm"}, FedAvgM{ServerLR: 0.1, Momentum: 0.9}},
		{Spec{Name: "fedadam"}, FedAdam{ServerLR: 0.01, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}},
		{Spec{Name: "fedyogi", Params: map[string]float64{"server_lr": 0.03, "tau": 1e-4}}, FedYogi{ServerLR: 0.03, Beta1: 0.9, Beta2: 0.99, Tau: 1e-4}},
		{Spec{Name: "fedadagrad", Params: map[string]float64{"beta1": 0}}, FedAdagrad{ServerLR: 0.01, Beta1: 0, Tau: 1e-3}},
		{Spec{Name: "median"}, Median{}},
		{Spec{Name: "trimmedmean"}, TrimmedMean{Beta: 0.1}},
		{Spec{Name: "trimmedmean", Params: map[string]float64{"beta": 0.25}}, TrimmedMean{Beta: 0.25}},
		{Spec{Name: "krum", Params: map[string]float64{"f": 2}}, Krum{F: 2}},
		{Spec{Name: "multikrum"}, MultiKrum{F: 1, M: 0}},
		{Spec{Name: "multikrum", Params: map[string]float64{"f": 0, "m": 3}}, MultiKrum{F: 0, M: 3}},
		{Spec{Name: "fedadam", NormBound: 5}, NormBound{Rule: FedAdam{ServerLR: 0.01, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}, Bound: 5}},
	}
	for _, tt := range tests {
		got, err := New(tt.spec)
		if err != nil {
			t.Errorf("New(%+v): %v", tt.spec, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("New(%+v) = %#v, want %#v", tt.spec, got, tt.want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		spec     Spec
		contains []string
	}{
		{Spec{Name: "fedsgd"}, []string{`unknown rule "fedsgd"`, "fedadam", "trimmedmean", "krum"}},
		{Spec{Name: "FedAvg"}, []string{`unknown rule "FedAvg"`, "fedavg"}},
		{Spec{}, []string{`unknown rule ""`}},
		{Spec{Name: "fedadam", Params: map[string]float64{"lr": 0.1}}, []string{`unknown parameter "lr"`, "beta1, beta2, server_lr, tau"}},
		{Spec{Name: "fedadagrad", Params: map[string]float64{"beta2": 0.9}}, []string{`unknown parameter "beta2"`, "beta1, server_lr, tau"}},
		{Spec{Name: "fedavg", Params: map[string]float64{"mu": 0.1}}, []string{`unknown parameter "mu"`, "takes no parameters"}},
		{Spec{Name: "fedprox", Params: map[string]float64{"mu": -0.1}}, []string{"mu = -0.1", "mu >= 0"}},
		{Spec{Name: "fedadam", Params: map[string]float64{"tau": 0}}, []string{"tau = 0", "tau > 0"}},
		{Spec{Name: "fedadam", Params: map[string]float64{"beta1": 1}}, []string{"beta1 = 1", "0 <= beta1 < 1"}},
		{Spec{Name: "fedyogi", Params: map[string]float64{"beta2": -0.5}}, []string{"beta2 = -0.5"}},
		{Spec{Name: "fedavgm", Params: map[string]float64{"server_lr": -1}}, []string{"server_lr = -1"}},
		{Spec{Name: "fedavgm", Params: map[string]float64{"momentum": math.NaN()}}, []string{"momentum", "finite"}},
		{Spec{Name: "trimmedmean", Params: map[string]float64{"beta": 0.5}}, []string{"beta = 0.5", "0 <= beta < 0.5"}},
		{Spec{Name: "krum", Params: map[string]float64{"f": 1.5}}, []string{"f = 1.5", "integer"}},
		{Spec{Name: "krum", Params: map[string]float64{"f": -1}}, []string{"f = -1"}},
		{Spec{Name: "krum", Params: map[string]float64{"f": 1e300}}, []string{"integer"}},
		{Spec{Name: "multikrum", Params: map[string]float64{"m": -3}}, []string{"m = -3"}},
		{Spec{Name: "median", NormBound: -1}, []string{"norm_bound = -1"}},
		{Spec{Name: "median", NormBound: math.Inf(1)}, []string{"norm_bound = +Inf"}},
	}
	for _, tt := range tests {
		_, err := New(tt.spec)
		if !errors.Is(err, ErrParams) {
			t.Errorf("New(%+v): err = %v, want ErrParams", tt.spec, err)
			continue
		}
		for _, c := range tt.contains {
			if !strings.Contains(err.Error(), c) {
				t.Errorf("New(%+v): error %q does not contain %q", tt.spec, err, c)
			}
		}
	}
}

func TestSpecJSON(t *testing.T) {
	var spec Spec
	if err := json.Unmarshal([]byte(`{"name":"fedyogi","params":{"server_lr":0.05},"norm_bound":3}`), &spec); err != nil {
		t.Fatal(err)
	}
	s, err := New(spec)
	if err != nil {
		t.Fatal(err)
	}
	want := NormBound{Rule: FedYogi{ServerLR: 0.05, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}, Bound: 3}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %#v, want %#v", s, want)
	}
	b, err := json.Marshal(Spec{Name: "fedavg"})
	if err != nil || string(b) != `{"name":"fedavg"}` {
		t.Errorf("Marshal = %s, %v", b, err)
	}
}

func TestDefaults(t *testing.T) {
	d, err := Defaults("fedadam")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 0.001}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("Defaults(fedadam) = %v", d)
	}
	d["tau"] = 5 // a copy
	if d2, _ := Defaults("fedadam"); d2["tau"] != 0.001 {
		t.Error("Defaults returned the shared map")
	}
	if d, err := Defaults("median"); err != nil || len(d) != 0 {
		t.Errorf("Defaults(median) = %v, %v", d, err)
	}
	if _, err := Defaults("nope"); !errors.Is(err, ErrParams) {
		t.Errorf("Defaults(nope) err = %v", err)
	}
}

func TestProximalMu(t *testing.T) {
	for _, tc := range []struct {
		spec Spec
		want float64
	}{
		{Spec{Name: "fedprox"}, 0.01},
		{Spec{Name: "fedprox", Params: map[string]float64{"mu": 0.5}}, 0.5},
		{Spec{Name: "fedprox", Params: map[string]float64{"mu": 0.5}, NormBound: 2}, 0.5},
		{Spec{Name: "fedavg"}, 0},
		{Spec{Name: "fedadam"}, 0},
	} {
		s, err := New(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := ProximalMu(s); got != tc.want {
			t.Errorf("ProximalMu(%+v) = %v, want %v", tc.spec, got, tc.want)
		}
	}
	if got := ProximalMu(&NormBound{Rule: FedProx{Mu: 0.3}, Bound: 1}); got != 0.3 {
		t.Errorf("ProximalMu(*NormBound) = %v", got)
	}
	if got := ProximalMu(nil); got != 0 {
		t.Errorf("ProximalMu(nil) = %v", got)
	}
}

// TestFedProxAggregatesLikeFedAvg: mu only matters to the sites.
func TestFedProxAggregatesLikeFedAvg(t *testing.T) {
	ups := []update{{[]float32{1, 2}, 3}, {[]float32{-4, 0.5}, 1}}
	a, p := begin(t, []float32{1, 1}), beginWith(t, FedProx{Mu: 1}, []float32{1, 1}, nil)
	for _, u := range ups {
		if err := a.Add(u.delta, u.samples); err != nil {
			t.Fatal(err)
		}
		if err := p.Add(u.delta, u.samples); err != nil {
			t.Fatal(err)
		}
	}
	if fa, fp := finish(t, a), finish(t, p); !equalBits(fa, fp) {
		t.Errorf("FedProx %v, FedAvg %v", fp, fa)
	}
}
