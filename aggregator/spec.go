package aggregator

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
)

// Spec selects a rule and its parameters, as a job's configuration carries
// them (JSON-friendly). New validates it and builds the Strategy.
//
//	{"name": "fedadam", "params": {"server_lr": 0.03}, "norm_bound": 5}
type Spec struct {
	// Name is one of Names().
	Name string `json:"name"`
	// Params overrides the rule's defaults (see Defaults); names the rule
	// does not take are an error. Integer parameters (Krum's f and m)
	// must hold integral values.
	Params map[string]float64 `json:"params,omitempty"`
	// NormBound, when > 0, clips every delta to this L2 norm before the
	// rule sees it (see NormBound). 0 disables it.
	NormBound float64 `json:"norm_bound,omitempty"`
}

// rule describes one name New accepts.
type rule struct {
	defaults map[string]float64
	build    func(p map[string]float64) Strategy
}

var rules = map[string]rule{
	"fedavg": {nil, func(map[string]float64) Strategy { return FedAvg{} }},
	"fedprox": {map[string]float64{"mu": 0.01},
		func(p map[string]float64) Strategy { return FedProx{Mu: p["mu"]} }},
	"fedavgm": {map[string]float64{"server_lr": 0.1, "momentum": 0.9},
		func(p map[string]float64) Strategy { return FedAvgM{ServerLR: p["server_lr"], Momentum: p["momentum"]} }},
	"fedadam": {map[string]float64{"server_lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
		func(p map[string]float64) Strategy {
			return FedAdam{ServerLR: p["server_lr"], Beta1: p["beta1"], Beta2: p["beta2"], Tau: p["tau"]}
		}},
	"fedyogi": {map[string]float64{"server_lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
		func(p map[string]float64) Strategy {
			return FedYogi{ServerLR: p["server_lr"], Beta1: p["beta1"], Beta2: p["beta2"], Tau: p["tau"]}
		}},
	"fedadagrad": {map[string]float64{"server_lr": 1e-2, "beta1": 0.9, "tau": 1e-3},
		func(p map[string]float64) Strategy {
			return FedAdagrad{ServerLR: p["server_lr"], Beta1: p["beta1"], Tau: p["tau"]}
		}},
	"median": {nil, func(map[string]float64) Strategy { return Median{} }},
	"trimmedmean": {map[string]float64{"beta": 0.1},
		func(p map[string]float64) Strategy { return TrimmedMean{Beta: p["beta"]} }},
	"krum": {map[string]float64{"f": 1},
		func(p map[string]float64) Strategy { return Krum{F: int(p["f"])} }},
	"multikrum": {map[string]float64{"f": 1, "m": 0},
		func(p map[string]float64) Strategy { return MultiKrum{F: int(p["f"]), M: int(p["m"])} }},
}

// intParams are the parameters that must hold integers.
var intParams = map[string]bool{"f": true, "m": true}

// maxIntParam bounds integer parameters, so converting them to int is
// safe everywhere.
const maxIntParam = 1 << 20

// Names returns the rule names New accepts, sorted.
func Names() []string {
	return slices.Sorted(maps.Keys(rules))
}

// Defaults returns the parameters rule name takes, with their default
// values (an empty map for rules without parameters).
func Defaults(name string) (map[string]float64, error) {
	r, ok := rules[name]
	if !ok {
		return nil, unknownRule(name)
	}
	return maps.Clone(r.defaults), nil
}

func unknownRule(name string) error {
	return fmt.Errorf("%w: unknown rule %q; valid rules: %s", ErrParams, name, strings.Join(Names(), ", "))
}

// New builds the Strategy spec describes, with defaults for the parameters
// it leaves out. It fails, with an error wrapping ErrParams, for an unknown
// rule or parameter (the error lists the valid ones) and for a value out of
// range.
func New(spec Spec) (Strategy, error) {
	r, ok := rules[spec.Name]
	if !ok {
		return nil, unknownRule(spec.Name)
	}
	p := maps.Clone(r.defaults)
	if p == nil {
		p = map[string]float64{}
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Params)) {
		v := spec.Params[k]
		if _, ok := r.defaults[k]; !ok {
			if len(r.defaults) == 0 {
				return nil, fmt.Errorf("%s: %w: unknown parameter %q; the rule takes no parameters", spec.Name, ErrParams, k)
			}
			return nil, fmt.Errorf("%s: %w: unknown parameter %q; valid parameters: %s",
				spec.Name, ErrParams, k, strings.Join(slices.Sorted(maps.Keys(r.defaults)), ", "))
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%s: %w: %s = %v, want a finite number", spec.Name, ErrParams, k, v)
		}
		if intParams[k] && (v != math.Trunc(v) || math.Abs(v) > maxIntParam) {
			return nil, fmt.Errorf("%s: %w: %s = %v, want an integer", spec.Name, ErrParams, k, v)
		}
		p[k] = v
	}
	s := r.build(p)
	if err := validate(s); err != nil {
		return nil, err
	}
	switch nb := spec.NormBound; {
	case nb == 0:
	case nb > 0 && !math.IsInf(nb, 0):
		s = NormBound{Rule: s, Bound: nb}
	default:
		return nil, fmt.Errorf("%s: %w: norm_bound = %v, want 0 (off) or a finite positive bound", spec.Name, ErrParams, nb)
	}
	return s, nil
}

// validate checks a strategy's parameters, as Begin would.
func validate(s Strategy) error {
	if nb, ok := s.(*NormBound); s == nil || ok && nb == nil {
		return fmt.Errorf("%w: nil strategy", ErrParams)
	}
	if v, ok := s.(interface{ validate() error }); ok {
		if err := v.validate(); err != nil {
			return err
		}
	}
	if nb, ok := s.(NormBound); ok {
		return validate(nb.Rule)
	}
	if nb, ok := s.(*NormBound); ok && nb != nil {
		return validate(NormBound{Rule: nb.Rule, Bound: nb.Bound})
	}
	return nil
}

// ProximalMu returns the proximal coefficient μ that sites must add to
// their local loss, (μ/2)·‖w − w_global‖², when s is FedProx (possibly
// wrapped in NormBound), and 0 for every other rule. The coordinator sends
// it to the sites with the round.
func ProximalMu(s Strategy) float64 {
	if p, ok := unwrap(s).(FedProx); ok {
		return p.Mu
	}
	return 0
}

// MinUpdates returns the fewest updates a round of s can finish with: 2f+3
// for Krum, max(2f+3, m+f) for Multi-Krum, 1 for every other rule.
func MinUpdates(s Strategy) int {
	switch r := unwrap(s).(type) {
	case Krum:
		return r.minUpdates()
	case MultiKrum:
		return r.minUpdates()
	}
	return 1
}

// CheckByzantine checks, when a job is configured, that rounds of s which
// close with at least minSites updates can finish: its parameters must be
// valid and minSites >= MinUpdates(s) (Krum and Multi-Krum refuse n <= 2f+2
// updates, and Multi-Krum needs n >= m+f). Errors wrap ErrParams.
func CheckByzantine(s Strategy, minSites int) error {
	if err := validate(s); err != nil {
		return err
	}
	if minSites < 1 {
		return fmt.Errorf("%s: %w: min_sites = %d, want >= 1", s.Name(), ErrParams, minSites)
	}
	if need := MinUpdates(s); minSites < need {
		var why string
		switch r := unwrap(s).(type) {
		case Krum:
			why = fmt.Sprintf("krum with f = %d needs n > 2f+2", r.F)
		case MultiKrum:
			why = fmt.Sprintf("multikrum with f = %d, m = %d needs n > 2f+2 and n >= m+f", r.F, r.M)
		}
		return fmt.Errorf("%s: %w: min_sites = %d, but %s, so at least %d sites per round",
			s.Name(), ErrParams, minSites, why, need)
	}
	return nil
}

// checkParam checks lo < v < hi (or <= where inclusive), finite.
func checkParam(rule, name string, v, lo, hi float64, loIncl, hiIncl bool) error {
	ok := !math.IsNaN(v) && !math.IsInf(v, 0) &&
		(v > lo || loIncl && v == lo) && (v < hi || hiIncl && v == hi)
	if ok {
		return nil
	}
	lop, hip := "<", "<"
	if loIncl {
		lop = "<="
	}
	if hiIncl {
		hip = "<="
	}
	want := fmt.Sprintf("%v %s %s %s %v", lo, lop, name, hip, hi)
	if math.IsInf(hi, 1) {
		want = fmt.Sprintf("%s %s %v, finite", name, map[string]string{"<": ">", "<=": ">="}[lop], lo)
	}
	return fmt.Errorf("%s: %w: %s = %v, want %s", rule, ErrParams, name, v, want)
}

// joinErrs joins the non-nil errors (nil when there are none).
func joinErrs(errs ...error) error {
	return errors.Join(slices.DeleteFunc(errs, func(e error) bool { return e == nil })...)
}
