package agent

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cohort-fl/cohort/agent/train"
	"github.com/cohort-fl/cohort/internal/secretfile"
)

// Local inference: POST /v1/predict on PredictAddr, a loopback address,
// with the bearer token in PredictTokenFile. It scores one patient with a
// job's deployed production version (deploy.go), given either the
// patient's features in raw units or the patient's pseudonymous key (the
// features are then built from the site's store, as for training), and
// answers the risk, the version, whether it crosses the job's alert
// threshold, and each feature's contribution: for logistic regression the
// coefficient times the standardized value, for an MLP integrated
// gradients (Sundararajan et al. 2017) from the all-centers baseline.
// Nothing here leaves the gateway.

// PredictRequest is the body of POST /v1/predict: Job and one of Features
// (raw values, in the feature spec's order) or Patient (a pseudonymous
// key from the site's store).
type PredictRequest struct {
	Job      string    `json:"job"`
	Features []float64 `json:"features,omitempty"`
	Patient  string    `json:"patient,omitempty"`
}

// Contribution is one feature's share of a prediction.
type Contribution struct {
	Feature string `json:"feature"`
	// Value is the feature's raw value; Contribution its share: the
	// coefficient times the standardized value (logistic regression, on
	// the log-odds), or its integrated gradient (MLP, on the risk).
	Value        float64 `json:"value"`
	Contribution float64 `json:"contribution"`
}

// Prediction is the answer of POST /v1/predict.
type Prediction struct {
	Job   string  `json:"job"`
	Model string  `json:"model"`
	Round uint64  `json:"round"`
	Risk  float64 `json:"risk"`
	// Alert is set when Risk is at or above the job's alert threshold.
	Alert bool `json:"alert,omitempty"`
	// Contributions, largest magnitude first.
	Contributions []Contribution `json:"contributions"`
}

// ErrPredict: a prediction request that cannot be answered as asked.
var ErrPredict = errors.New("cannot predict")

// igSteps is the number of points on the integrated-gradients path.
const igSteps = 32

// Predict scores one patient with job's deployed version.
func (a *Agent) Predict(req PredictRequest) (*Prediction, error) {
	d := a.deployedModel(req.Job)
	if d == nil {
		return nil, fmt.Errorf("%w: job %q has no deployed model at this site", ErrPredict, req.Job)
	}
	x, raw, err := a.predictInput(d, req)
	if err != nil {
		return nil, err
	}
	m, err := d.trainer()
	if err != nil {
		return nil, err
	}
	p, err := m.Predict(x, 1)
	if err != nil {
		return nil, err
	}
	out := &Prediction{Job: d.Job, Model: d.Digest, Round: d.Round, Risk: float64(p[0])}
	out.Alert = d.AlertThreshold > 0 && out.Risk >= d.AlertThreshold
	contrib, err := contributions(d, m, x)
	if err != nil {
		return nil, err
	}
	for i, name := range d.features {
		out.Contributions = append(out.Contributions, Contribution{Feature: name, Value: raw[i], Contribution: contrib[i]})
	}
	sortContributions(out.Contributions)
	a.mu.Lock()
	a.stats.Predictions++
	a.mu.Unlock()
	return out, nil
}

// sortContributions orders contributions by magnitude, largest first.
func sortContributions(cs []Contribution) {
	slices.SortStableFunc(cs, func(p, q Contribution) int {
		switch a, b := math.Abs(p.Contribution), math.Abs(q.Contribution); {
		case a > b:
			return -1
		case a < b:
			return 1
		}
		return 0
	})
}

// predictInput is the standardized feature row for a request, and the raw
// values.
func (a *Agent) predictInput(d *deployed, req PredictRequest) (x []float32, raw []float64, err error) {
	specs := d.spec.GetFeatures()
	switch {
	case (len(req.Features) > 0) == (req.Patient != ""):
		return nil, nil, fmt.Errorf("%w: give either features or patient", ErrPredict)
	case req.Patient != "":
		ds, err := a.dataset(d.spec)
		if err != nil {
			return nil, nil, err
		}
		i := slices.Index(ds.Keys, req.Patient)
		if i < 0 {
			return nil, nil, fmt.Errorf("%w: no eligible patient with that key", ErrPredict)
		}
		x = slices.Clone(ds.Row(i))
		for j, f := range specs {
			raw = append(raw, float64(x[j])*scaleOf(f.GetScale())+f.GetCenter())
		}
		return x, raw, nil
	case len(req.Features) != len(specs):
		return nil, nil, fmt.Errorf("%w: %d features, the model takes %d (%s)", ErrPredict, len(req.Features), len(specs), strings.Join(d.features, ", "))
	}
	for j, f := range specs {
		v := req.Features[j]
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, nil, fmt.Errorf("%w: feature %s is not a finite number", ErrPredict, f.GetName())
		}
		x = append(x, float32((v-f.GetCenter())/scaleOf(f.GetScale())))
	}
	return x, req.Features, nil
}

func scaleOf(s float64) float64 {
	if s == 0 {
		return 1
	}
	return s
}

// contributions are each feature's share of the prediction for row x: the
// coefficient times the value for logistic regression; for an MLP the
// integrated gradients from the zero row (every feature at its center),
// with the gradients by central differences at the midpoints of igSteps
// segments, all in one batched forward pass. They add up to the risk
// minus the baseline's risk, up to the discretization.
func contributions(d *deployed, m train.Trainer, x []float32) ([]float64, error) {
	n := len(x)
	out := make([]float64, n)
	if d.model.GetKind() == "logreg" {
		for i := range x {
			out[i] = float64(d.weights[i]) * float64(x[i])
		}
		return out, nil
	}
	const h = 1e-3
	rows := make([]float32, 0, igSteps*2*n*n)
	for k := range igSteps {
		alpha := (float32(k) + 0.5) / igSteps
		for i := range n {
			for _, sign := range []float32{1, -1} {
				for j := range n {
					v := alpha * x[j]
					if j == i {
						v += sign * h
					}
					rows = append(rows, v)
				}
			}
		}
	}
	p, err := m.Predict(rows, igSteps*2*n)
	if err != nil {
		return nil, err
	}
	for k := range igSteps {
		for i := range n {
			at := (k*n + i) * 2
			grad := (float64(p[at]) - float64(p[at+1])) / (2 * h)
			out[i] += float64(x[i]) * grad / igSteps
		}
	}
	return out, nil
}

// checkPredictAddr refuses a predict address that is not loopback: local
// inference is for the gateway's own clients.
func checkPredictAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address", host)
	}
	return nil
}

// predictToken reads the bearer token clients must send, refusing a file
// others can read.
func predictToken(path string) (string, error) {
	tok, err := secretfile.Read(path, "predict token file")
	if err != nil {
		return "", err
	}
	if len(tok) < 16 {
		return "", fmt.Errorf("%s holds a token of %d characters; use at least 16", path, len(tok))
	}
	return tok, nil
}

// servePredict serves POST /v1/predict on ln until ctx ends.
func (a *Agent) servePredict(ctx context.Context, ln net.Listener, token string) error {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/predict", func(w http.ResponseWriter, req *http.Request) {
		auth := req.Header.Get("Authorization")
		if !strings.HasPrefix(auth, "Bearer ") || subtle.ConstantTimeCompare([]byte(auth[len("Bearer "):]), []byte(token)) != 1 {
			a.mu.Lock()
			a.stats.PredictionsRefused++
			a.mu.Unlock()
			predictError(w, http.StatusUnauthorized, "a valid bearer token is required (predict_token_file)")
			return
		}
		var pr PredictRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&pr); err != nil {
			predictError(w, http.StatusBadRequest, "request body: "+err.Error())
			return
		}
		p, err := a.Predict(pr)
		switch {
		case errors.Is(err, ErrPredict):
			predictError(w, http.StatusBadRequest, err.Error())
			return
		case err != nil:
			a.log.Warn("prediction failed", "job", pr.Job, "err", err)
			predictError(w, http.StatusInternalServerError, "prediction failed")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func predictError(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"title": http.StatusText(status), "status": status, "detail": detail})
}
