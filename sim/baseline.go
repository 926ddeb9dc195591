package sim

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"

	"github.com/cohort-fl/cohort/agent"
	"github.com/cohort-fl/cohort/agent/features"
	"github.com/cohort-fl/cohort/agent/fhir"
	"github.com/cohort-fl/cohort/agent/store"
	"github.com/cohort-fl/cohort/agent/train"
	"github.com/cohort-fl/cohort/agent/train/mlpspec"
	"github.com/cohort-fl/cohort/coordinator"
	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
)

// dataset is a featurized population.
type dataset = features.Dataset

// loadDataset reads a FHIR directory into memory and builds its features.
func loadDataset(ctx context.Context, dir string, spec *pb.FeatureSpec) (*dataset, error) {
	var c fhir.Collector
	if _, err := fhir.ReadDir(ctx, dir, &c); err != nil {
		return nil, err
	}
	return features.Build(spec, c.Patients())
}

// scoreModel evaluates a committed global model on the test set.
// scoreModel evaluates a committed global model on the test set and
// returns its weights too.
func scoreModel(ctx context.Context, node *coordinator.Node, spec coordinator.ModelSpec, m *coordinator.Model, test *dataset) (Metrics, []float32, error) {
	if m == nil {
		return Metrics{}, nil, fmt.Errorf("committed model not found")
	}
	b, err := node.ModelWeights(ctx, m.Digest)
	if err != nil {
		return Metrics{}, nil, err
	}
	w, err := protocol.DecodeF32(b)
	if err != nil {
		return Metrics{}, nil, err
	}
	model, err := agent.NewTrainer(spec.Wire(), test.Cols)
	if err != nil {
		return Metrics{}, nil, err
	}
	if err := model.SetWeights(w); err != nil {
		return Metrics{}, nil, err
	}
	met, err := score(model, test)
	return met, w, err
}

func score(model train.Trainer, test *dataset) (Metrics, error) {
	p, err := model.Predict(test.X, test.Rows)
	if err != nil {
		return Metrics{}, err
	}
	auc, err := train.AUROC(p, test.Y)
	if err != nil {
		return Metrics{}, err
	}
	return Metrics{AUROC: auc, Accuracy: train.Accuracy(p, test.Y, 0.5)}, nil
}

type baselineResult struct {
	central Metrics
	local   LocalOnly
	// federated is the final global model's AUROC on each site's own
	// held-out validation records (absent when it cannot be scored).
	federated map[string]float64
}

// baselines trains a centralized model on the pooled training splits and a
// local-only model per site, with the job's model, trainer, options and
// epoch budget (Rounds x LocalEpochs), and scores them on the test set.
// Each site's data is read back from its agent's encrypted store (after
// the agents stopped) and split exactly as the agent split it, so the
// baselines train on the very records the federation trained on. final,
// when set, is the federation's final model, scored on each site's
// validation split too.
func baselines(ctx context.Context, dir string, sites []string, spec *pb.FeatureSpec, test *dataset, job coordinator.JobSpec, final []float32) (*baselineResult, error) {
	opts := agent.TrainOptions(&pb.TrainParams{
		LocalEpochs: uint32(job.Rounds * job.Train.LocalEpochs), LearningRate: float32(job.Train.LearningRate),
		BatchSize: uint32(job.Train.BatchSize), Seed: job.Train.Seed, Optimizer: job.Train.Optimizer,
		AdamBeta1: job.Train.AdamBeta1, AdamBeta2: job.Train.AdamBeta2, AdamEps: job.Train.AdamEps, PosWeight: job.Train.PosWeight,
	})
	res := &baselineResult{local: LocalOnly{Sites: make(map[string]float64)}, federated: map[string]float64{}}
	var pooled *dataset
	for _, s := range sites {
		ds, err := agentDataset(filepath.Join(dir, "agents", s), spec)
		if err != nil {
			return nil, fmt.Errorf("site %s: %w", s, err)
		}
		tr, val := features.Split(ds, job.Train.ValidationFraction, job.ID)
		m, err := fit(ctx, job, tr, test, opts)
		if err != nil {
			return nil, fmt.Errorf("local-only %s: %w", s, err)
		}
		res.local.Sites[s] = m.AUROC
		if final != nil && val != nil && val.Rows > 0 {
			if model, err := newModel(job, val.Cols); err == nil && model.SetWeights(final) == nil {
				if fm, err := score(model, val); err == nil {
					res.federated[s] = fm.AUROC
				}
			}
		}
		if pooled, err = concat(pooled, tr); err != nil {
			return nil, err
		}
	}
	var sum float64
	for _, v := range res.local.Sites {
		sum += v
	}
	res.local.MeanAUROC = sum / float64(len(res.local.Sites))
	central, err := fit(ctx, job, pooled, test, opts)
	if err != nil {
		return nil, fmt.Errorf("centralized: %w", err)
	}
	res.central = central
	return res, nil
}

// agentDataset opens a stopped agent's store with its own keys and builds
// the spec's features from it.
func agentDataset(agentDir string, spec *pb.FeatureSpec) (*dataset, error) {
	master, err := store.LoadOrCreateKey(filepath.Join(agentDir, "master.key"), 32)
	if err != nil {
		return nil, err
	}
	secret, err := store.LoadOrCreateKey(filepath.Join(agentDir, "pseudonym.key"), 32)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(store.Config{Path: filepath.Join(agentDir, "store.db"), MasterKey: master, PseudonymKey: secret})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	var patients []fhir.PatientData
	if err := st.ForEachPatient(func(pd fhir.PatientData) error {
		patients = append(patients, pd)
		return nil
	}); err != nil {
		return nil, err
	}
	return features.Build(spec, patients)
}

// newModel builds the job's model for cols features, from the job's
// initial weights (a seeded draw for an MLP, as the coordinator starts it).
func newModel(job coordinator.JobSpec, cols int) (train.Trainer, error) {
	ms := job.Model
	ms.NumFeatures = cols
	model, err := agent.NewTrainer(ms.Wire(), cols)
	if err != nil {
		return nil, err
	}
	if ms.Kind == "mlp" {
		w, err := mlpspec.InitialWeights(cols, mlpspec.Config{Hidden: ms.Hidden, Activation: ms.Activation, Dropout: ms.Dropout}, job.Train.Seed)
		if err != nil {
			return nil, err
		}
		if err := model.SetWeights(w); err != nil {
			return nil, err
		}
	}
	return model, nil
}

// fit trains a fresh model of the job's kind on tr and scores it on test.
func fit(ctx context.Context, job coordinator.JobSpec, tr, test *dataset, opts train.Options) (Metrics, error) {
	model, err := newModel(job, tr.Cols)
	if err != nil {
		return Metrics{}, err
	}
	if _, err := model.Train(ctx, tr.X, tr.Y, tr.Rows, opts); err != nil {
		return Metrics{}, err
	}
	return score(model, test)
}

func concat(a, b *dataset) (*dataset, error) {
	if a == nil {
		c := *b
		c.X = slices.Clone(b.X)
		c.Y = slices.Clone(b.Y)
		return &c, nil
	}
	if a.Cols != b.Cols {
		return nil, fmt.Errorf("concat: %d vs %d columns", a.Cols, b.Cols)
	}
	a.X = append(a.X, b.X...)
	a.Y = append(a.Y, b.Y...)
	a.Keys = append(a.Keys, b.Keys...)
	a.Rows += b.Rows
	return a, nil
}

func sortedKeys(m map[string]float64) []string { return slices.Sorted(maps.Keys(m)) }
