package egress

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/protocol"
	"github.com/cohort-fl/cohort/protocol/pb"
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func line(t testing.TB, r Record) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func rec(kind string, at time.Duration, job string, round uint64, n int) Record {
	return Record{Time: t0.Add(at), Kind: kind, Bytes: n, SHA256: protocol.Digest([]byte(kind + job)), Job: job, Round: round}
}

// What the guard writes, ReadLog reads back, in order.
func TestReadLogReadsWhatTheGuardWrites(t *testing.T) {
	g, logPath, _ := newGuard(t)
	var wire bytes.Buffer
	if err := g.Send(&wire, &pb.Envelope{Body: &pb.Envelope_Hello{Hello: &pb.Hello{ProtocolVersion: 1}}}); err != nil {
		t.Fatal(err)
	}
	data := protocol.EncodeF32([]float32{1, 2})
	ref := &pb.BlobRef{Sha256: protocol.Digest(data), Size: uint64(len(data)), Encoding: pb.Encoding_ENCODING_F32LE}
	if err := g.SendTensor(&wire, ref, data, "j1", 3); err != nil {
		t.Fatal(err)
	}
	g.Close()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, bad, err := ReadLog(f, Filter{})
	if err != nil || len(bad) != 0 {
		t.Fatalf("ReadLog: %v %v", err, bad)
	}
	if len(recs) != 2 || recs[0].Kind != KindHello || recs[1].Kind != KindUpdateBody || recs[1].Job != "j1" || recs[1].Round != 3 ||
		recs[1].Bytes != len(data) || recs[1].SHA256 != protocol.Digest(data) || !recs[1].Time.Equal(t0) {
		t.Fatalf("records = %+v", recs)
	}
}

func TestReadLogFilters(t *testing.T) {
	all := []Record{
		rec(KindHello, 0, "", 0, 40),
		rec(KindTaskRequest, time.Minute, "", 0, 20),
		rec(KindUpdateHeader, 2*time.Minute, "sepsis", 1, 300),
		rec(KindUpdateBody, 2*time.Minute, "sepsis", 1, 4000),
		rec(KindUpdateHeader, 3*time.Minute, "aki", 1, 300),
	}
	var log strings.Builder
	for _, r := range all {
		log.WriteString(line(t, r))
	}
	for _, tt := range []struct {
		name string
		f    Filter
		want []int
	}{
		{"all", Filter{}, []int{0, 1, 2, 3, 4}},
		{"since", Filter{Since: t0.Add(2 * time.Minute)}, []int{2, 3, 4}},
		{"job", Filter{Job: "sepsis"}, []int{2, 3}},
		{"kind", Filter{Kind: KindUpdateHeader}, []int{2, 4}},
		{"all three", Filter{Since: t0.Add(time.Minute), Job: "sepsis", Kind: KindUpdateBody}, []int{3}},
		{"none", Filter{Job: "nope"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			recs, bad, err := ReadLog(strings.NewReader(log.String()), tt.f)
			if err != nil || len(bad) != 0 {
				t.Fatalf("ReadLog: %v %v", err, bad)
			}
			var want []Record
			for _, i := range tt.want {
				want = append(want, all[i])
			}
			if !reflect.DeepEqual(recs, want) {
				t.Fatalf("got %+v\nwant %+v", recs, want)
			}
		})
	}
}

// Malformed lines are skipped and reported by line number, with reasons
// that do not quote the line; good lines around them are kept.
func TestReadLogSkipsMalformedLines(t *testing.T) {
	good := line(t, rec(KindHello, 0, "", 0, 10))
	lines := []string{
		good,                           // 1
		"not json at all John Smith\n", // 2
		"\n",                           // 3: blank, ignored
		`{"time":"2026-11-28T12:00:00Z","kind":"exfiltrate","bytes":1,"sha256":"` + strings.Repeat("a", 64) + "\"}\n", // 4
		`{"time":"John Smith","kind":"hello","bytes":1,"sha256":"` + strings.Repeat("a", 64) + "\"}\n",                // 5
		`{"time":"2026-11-28T12:00:00Z","kind":"hello","bytes":-1,"sha256":"` + strings.Repeat("a", 64) + "\"}\n",     // 6
		`{"time":"2026-11-28T12:00:00Z","kind":"hello","bytes":1,"sha256":"MRN-0012345"}` + "\n",                      // 7
		`{"kind":"hello","bytes":1,"sha256":"` + strings.Repeat("a", 64) + "\"}\n",                                    // 8: no time
		`{"time":"2026-11-28T12:00:00Z","kind":"hello","bytes":"many","sha256":"` + strings.Repeat("a", 64) + "\"}\n", // 9
		strings.TrimSuffix(good, "\n") + " {}\n",                                                                      // 10: two values
		"null\n",                                                                                                      // 11
		"{" + strings.Repeat(" ", MaxLineBytes+10) + "}\n",                                                            // 12: too long
		strings.TrimSuffix(good, "\n") + "\r\n",                                                                       // 13: CRLF is fine
		good[:len(good)/2],                                                                                            // 14: cut by a crash
	}
	recs, bad, err := ReadLog(strings.NewReader(strings.Join(lines, "")), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Errorf("%d records, want lines 1 and 13", len(recs))
	}
	var nums []int
	for _, b := range bad {
		nums = append(nums, b.Line)
		if !errors.Is(b, ErrMalformed) {
			t.Errorf("line %d: %v is not ErrMalformed", b.Line, b.Err)
		}
		for _, leak := range []string{"John", "MRN", "exfiltrate", "many"} {
			if strings.Contains(b.Error(), leak) {
				t.Errorf("line %d: the reason %q quotes the line", b.Line, b.Error())
			}
		}
	}
	if want := []int{2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14}; !reflect.DeepEqual(nums, want) {
		t.Errorf("malformed lines %v, want %v", nums, want)
	}
	if !errors.Is(bad[len(bad)-2], ErrLineTooLong) {
		t.Errorf("line 12: %v", bad[len(bad)-2])
	}
}

// failingReader returns its lines, one per Read, then fails.
type failingReader struct{ lines []string }

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.lines) > 0 {
		n := copy(p, r.lines[0])
		r.lines = r.lines[1:]
		return n, nil
	}
	return 0, io.ErrClosedPipe
}

func TestReadLogReportsReadErrors(t *testing.T) {
	l := line(t, rec(KindHello, 0, "", 0, 1))
	recs, _, err := ReadLog(&failingReader{lines: []string{l, l}}, Filter{})
	if !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("err = %v", err)
	}
	if len(recs) != 2 {
		t.Fatalf("%d records before the failure, want 2", len(recs))
	}
}

// FuzzReadLog: any bytes give records and line errors, never a panic;
// every record returned is valid, every non-blank line is either a record
// or an error, and writing the records back reads back the same.
func FuzzReadLog(f *testing.F) {
	good := line(f, rec(KindUpdateBody, 0, "j1", 2, 4096))
	f.Add([]byte(good))
	f.Add([]byte(good + good + "\n\n" + good[:20]))
	f.Add([]byte("not json\n{}\nnull\n[]\n"))
	f.Add([]byte(`{"time":"2026-11-28T12:00:00Z","kind":"hello","bytes":-1,"sha256":""}` + "\r\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, bad, err := ReadLog(bytes.NewReader(data), Filter{})
		if err != nil {
			t.Fatalf("a bytes.Reader failed: %v", err)
		}
		nonBlank := 0
		for l := range strings.SplitSeq(string(data), "\n") {
			l = strings.TrimSuffix(l, "\r")
			if len(l) > MaxLineBytes || len(bytes.TrimSpace([]byte(l))) > 0 {
				nonBlank++
			}
		}
		if len(recs)+len(bad) != nonBlank {
			t.Fatalf("%d records + %d errors for %d non-blank lines", len(recs), len(bad), nonBlank)
		}
		last := 0
		for _, b := range bad {
			if b.Line <= last || !errors.Is(b, ErrMalformed) {
				t.Fatalf("line error %v after line %d", b, last)
			}
			last = b.Line
		}
		var out bytes.Buffer
		for _, r := range recs {
			if err := r.check(); err != nil {
				t.Fatalf("returned an invalid record %+v: %v", r, err)
			}
			out.WriteString(line(t, r))
		}
		again, bad2, err := ReadLog(&out, Filter{})
		if err != nil || len(bad2) != 0 || len(again) != len(recs) {
			t.Fatalf("round trip: %d records, %v, %v; want %d", len(again), bad2, err, len(recs))
		}
		for i := range again {
			if !again[i].Time.Equal(recs[i].Time) || again[i].Kind != recs[i].Kind || again[i].Bytes != recs[i].Bytes ||
				again[i].SHA256 != recs[i].SHA256 || again[i].Job != recs[i].Job || again[i].Round != recs[i].Round {
				t.Fatalf("round trip changed record %d: %+v → %+v", i, recs[i], again[i])
			}
		}
	})
}
