package store

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// BenchmarkIngestEncrypted ingests Synthea's Observation NDJSON (read and
// decompressed once) into a new file store per iteration through a Batch:
// parsing, pseudonymizing, sealing and one fsync per 1000 records. It
// reports FHIR resources and stored records per second.
func BenchmarkIngestEncrypted(b *testing.B) {
	f, err := os.Open(filepath.Join(syntheaDir, "ndjson", "Observation.ndjson.gz"))
	if err != nil {
		b.Skipf("real data not found at %s (see shared/data/README.md): %v", syntheaDir, err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	m, p := testKeys(1)
	var resources, records int
	var elapsed time.Duration
	b.SetBytes(int64(len(raw)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, err := Open(Config{Path: filepath.Join(b.TempDir(), "store.db"), MasterKey: m, PseudonymKey: p})
		if err != nil {
			b.Fatal(err)
		}
		st := fhir.NewStats()
		b.StartTimer()
		start := time.Now()
		batch := s.NewBatch(0)
		if err := fhir.ReadNDJSON(context.Background(), bytes.NewReader(raw), batch, st); err != nil {
			b.Fatal(err)
		}
		if err := batch.Flush(); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		b.StopTimer()
		resources += st.Resources["Observation"]
		records += int(s.Stats().Written)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(resources)/elapsed.Seconds(), "resources/s")
	b.ReportMetric(float64(records)/elapsed.Seconds(), "records/s")
}

// BenchmarkStoreMemory writes N synthetic observations (200,000; 20,000
// with -short) into a file store and reports the heap the store holds per
// observation (buntdb keeps every record in memory) and the file bytes per
// observation. Multiply by 1e6 for a million observations.
func BenchmarkStoreMemory(b *testing.B) {
	n := 200_000
	if testing.Short() {
		n = 20_000
	}
	m, p := testKeys(1)
	codes := []string{"8867-4", "8480-6", "8462-4", "2339-0", "59408-5", "9279-1"}
	var heapPer, filePer float64
	for i := 0; i < b.N; i++ {
		path := filepath.Join(b.TempDir(), "store.db")
		s, err := Open(Config{Path: path, MasterKey: m, PseudonymKey: p})
		if err != nil {
			b.Fatal(err)
		}
		before := heapInUse()
		batch := s.NewBatch(0)
		at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		for j := range n {
			o := fhir.Observation{
				ID:        "f0e1d2c3-b4a5-4697-8899-" + fmt.Sprintf("%012d", j),
				Version:   fhir.Version{Updated: at.Add(time.Duration(j) * time.Second)},
				PatientID: "8c95253e-8ee8-4f8f-b3b4-" + fmt.Sprintf("%012d", j/100), // 100 per patient
				Code:      codes[j%len(codes)],
				Unit:      "mm[Hg]",
				Value:     60 + float64(j%800)/10,
				Time:      at.Add(time.Duration(j) * time.Minute),
			}
			if err := batch.Observation(o); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Flush(); err != nil {
			b.Fatal(err)
		}
		heapPer = float64(heapInUse()-before) / float64(n)
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		filePer = float64(fi.Size()) / float64(n)
		runtime.KeepAlive(s)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(heapPer, "heap-B/obs")
	b.ReportMetric(filePer, "file-B/obs")
	b.ReportMetric(float64(n), "obs")
	b.Logf("%s observations: %.0f heap bytes and %.0f file bytes each (%.0f MiB and %.0f MiB per million)",
		strconv.Itoa(n), heapPer, filePer, heapPer*1e6/(1<<20), filePer*1e6/(1<<20))
}

// heapInUse returns the live heap after a full collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
