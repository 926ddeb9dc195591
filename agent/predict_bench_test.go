package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol/pb"
	"github.com/cohort-fl/cohort/sim/synth"
)

// BenchmarkPredict measures local inference on the agent against the bare
// model evaluation of the same row in the same run: path=bare is one
// Predict call of the model; path=predict is Agent.Predict (standardizing,
// scoring and the per-feature contributions: coefficient × value for
// logistic regression, integrated gradients over 32 steps for the MLP);
// path=http is POST /v1/predict over loopback with its bearer token. One op
// is one prediction from one client; p50-ns and p99-ns are the latency
// percentiles of the ops (scripts/bench.sh prints the ratios).
func BenchmarkPredict(b *testing.B) {
	spec := synth.DefaultFeatureSpec()
	nf := len(spec.GetFeatures())
	raw := []float64{70, 1, 95, 35, 120, 18, 1.2, 0.6, 4}[:nf]
	for _, kind := range []string{"logreg", "mlp"} {
		ms := &pb.ModelSpec{Kind: kind, NumFeatures: uint32(nf)}
		if kind == "mlp" {
			ms.Hidden, ms.Activation = []uint32{32, 16}, "relu"
		}
		m, err := NewTrainer(ms, nf)
		if err != nil {
			b.Fatal(err)
		}
		ms.NumParams = uint32(m.NumParams())
		w := m.Weights()
		for i := range w {
			w[i] = float32(math.Sin(float64(i))) * 0.3
		}
		d := &deployed{Job: "sepsis", Digest: fmt.Sprintf("%064x", 1), Round: 3, spec: spec, model: ms, weights: w}
		for _, f := range spec.GetFeatures() {
			d.features = append(d.features, f.GetName())
		}
		d.built = sync.OnceValues(d.build)
		a := &Agent{log: slog.New(slog.DiscardHandler)}
		a.setDeployed(d)
		req := PredictRequest{Job: "sepsis", Features: raw}
		x, _, err := a.predictInput(d, req)
		if err != nil {
			b.Fatal(err)
		}
		tr, err := d.trainer()
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		const token = "benchmark-token-0123456789"
		ctx, cancel := context.WithCancel(context.Background())
		go a.servePredict(ctx, ln, token)
		body, _ := json.Marshal(req)
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
		paths := map[string]func() error{
			"bare":    func() error { _, err := tr.Predict(x, 1); return err },
			"predict": func() error { _, err := a.Predict(req); return err },
			"http": func() error {
				hr, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/v1/predict", bytes.NewReader(body))
				hr.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(hr)
				if err != nil {
					return err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			},
		}
		for _, path := range []string{"bare", "predict", "http"} {
			b.Run(fmt.Sprintf("model=%s/path=%s", kind, path), func(b *testing.B) {
				fn := paths[path]
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for range b.N {
					t0 := time.Now()
					if err := fn(); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(t0))
				}
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
				b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ns")
			})
		}
		cancel()
	}
}
