package store

import (
	"github.com/cohort-fl/cohort/agent/fhir"
)

// DefaultBatchSize is the batch size NewBatch uses for a size <= 0.
const DefaultBatchSize = 1000

// Batch is a fhir.Sink that buffers records and writes them in one
// transaction (one fsync) per size records, for bulk ingest. Records are
// checked and encoded when they arrive, and sealed when they are written
// (under the data key current then); nothing is durable until Flush
// returns. Like single writes, a buffered record whose id is stored with
// the same or a newer version is skipped (see Store.Stats). A Batch is not
// safe for concurrent use.
type Batch struct {
	s       *Store
	size    int
	pending []kv
}

var _ fhir.Sink = (*Batch)(nil)

// NewBatch returns a Batch writing to s every size records.
func (s *Store) NewBatch(size int) *Batch {
	if size <= 0 {
		size = DefaultBatchSize
	}
	return &Batch{s: s, size: size}
}

func (b *Batch) add(r kv, err error) error {
	if err != nil {
		return err
	}
	b.pending = append(b.pending, r)
	if len(b.pending) >= b.size {
		return b.Flush()
	}
	return nil
}

// Patient implements fhir.Sink.
func (b *Batch) Patient(p fhir.Patient) error { return b.add(b.s.patientKV(p)) }

// Observation implements fhir.Sink.
func (b *Batch) Observation(o fhir.Observation) error { return b.add(b.s.observationKV(o)) }

// Condition implements fhir.Sink.
func (b *Batch) Condition(c fhir.Condition) error { return b.add(b.s.conditionKV(c)) }

// Encounter implements fhir.Sink.
func (b *Batch) Encounter(e fhir.Encounter) error { return b.add(b.s.encounterKV(e)) }

// Flush writes the buffered records in one transaction. On error the
// buffered records are kept, so Flush may be retried.
func (b *Batch) Flush() error {
	if len(b.pending) == 0 {
		return nil
	}
	if err := b.s.write(b.pending...); err != nil {
		return err
	}
	b.pending = b.pending[:0]
	return nil
}
