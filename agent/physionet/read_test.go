package physionet

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseMinute(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"00:00", 0, true},
		{"00:07", 7, true},
		{"47:59", 2879, true},
		{"48:00", 2880, true},
		{"1:05", 65, true},
		{"9999:59", MaxMinute, true},
		{"10000:00", 0, false},
		{"00:60", 0, false},
		{"00:5", 0, false},
		{"00:005", 0, false},
		{":05", 0, false},
		{"-1:00", 0, false},
		{"aa:bb", 0, false},
		{"0005", 0, false},
		{"", 0, false},
		{"01:0x", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parseMinute(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("parseMinute(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestParseStay(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    *Stay
		skipped skipCounts
		reason  string
	}{
		{
			name: "descriptors and rows",
			body: "Time,Parameter,Value\n00:00,RecordID,7\n00:00,Age,63.5\n00:00,Gender,1\n00:00,Height,180.3\n00:00,ICUType,2\n00:00,Weight,80\n00:07,HR,73\n00:07,Weight,81.5\n",
			want: &Stay{RecordID: 7, Age: 63.5, Gender: 1, Height: 180.3, Weight: 80, ICUType: 2,
				Rows: []Row{{7, "HR", 73}, {7, "Weight", 81.5}}},
		},
		{
			name: "descriptors missing",
			body: "Time,Parameter,Value\n00:00,RecordID,7\n00:00,Age,-1\n00:00,Gender,-1\n00:00,Height,-1\n00:00,Weight,-1\n",
			want: &Stay{RecordID: 7, Age: -1, Gender: -1, Height: -1, Weight: -1, ICUType: -1},
		},
		{
			name:    "skip reasons",
			body:    "Time,Parameter,Value\n00:10,HR,-1\n00:10,SpO2,97\n00:10,HR\n00:10,HR,1,2\n00:10,HR,abc\n00:10,HR,NaN\n00:10,HR,+Inf\n0:6,HR,70\n00:61,HR,70\n00:00,Age,40\n00:00,Age,41\n01:00,Gender,1\n00:00,ICUType,2.5\n00:11,HR,80\n",
			want:    &Stay{RecordID: 7, Age: 40, Gender: -1, Height: -1, Weight: -1, ICUType: -1, Rows: []Row{{11, "HR", 80}}},
			skipped: skipCounts{skipMissing: 1, skipUnknown: 1, skipMalformed: 7, skipBadTime: 2, skipDupDescriptor: 1},
		},
		{
			name: "crlf, no header, blank lines, rows sorted by time",
			body: "00:00,RecordID,7\r\n\r\n02:00,HR,90\r\n01:00,HR,80\r\n01:00,RespRate,18\r\n00:00,Weight,70\r\n00:00,Weight,71\r\n",
			want: &Stay{RecordID: 7, Age: -1, Gender: -1, Height: -1, Weight: 70, ICUType: -1,
				Rows: []Row{{0, "Weight", 71}, {60, "HR", 80}, {60, "RespRate", 18}, {120, "HR", 90}}},
		},
		{
			name:   "record id mismatch",
			body:   "Time,Parameter,Value\n00:00,RecordID,8\n00:10,HR,70\n",
			reason: StayRecordIDMismatch,
		},
		{
			name: "negative values other than -1 are kept",
			body: "00:10,Temp,-17.8\n00:10,MechVent,1\n",
			want: &Stay{RecordID: 7, Age: -1, Gender: -1, Height: -1, Weight: -1, ICUType: -1,
				Rows: []Row{{10, "Temp", -17.8}, {10, "MechVent", 1}}},
		},
		{
			name: "empty file",
			body: "",
			want: &Stay{RecordID: 7, Age: -1, Gender: -1, Height: -1, Weight: -1, ICUType: -1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, skipped, reason := parseStay(7, []byte(tc.body))
			if reason != tc.reason {
				t.Fatalf("reason = %q, want %q", reason, tc.reason)
			}
			if reason != "" {
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("stay = %+v\nwant   %+v", got, tc.want)
			}
			if skipped != tc.skipped {
				t.Errorf("skipped = %v, want %v", skipped, tc.skipped)
			}
		})
	}
}

func TestReadOutcomes(t *testing.T) {
	st := NewStats()
	in := "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n" +
		"1,6,1,5,-1,0\n" +
		"2,16,8,8,3,1\n" +
		"2,1,1,1,1,0\n" + // duplicate
		"3,1,1\n" + // short
		"4,1,1,1,1,2\n" + // death not 0/1
		"x,1,1,1,1,0\n" +
		"0,1,1,1,1,0\n" +
		"\n"
	got, err := readOutcomes(strings.NewReader(in), st)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]Outcome{
		1: {SAPS: 6, SOFA: 1, LengthOfStay: 5, Survival: -1},
		2: {SAPS: 16, SOFA: 8, LengthOfStay: 8, Survival: 3, InHospitalDeath: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("outcomes = %+v, want %+v", got, want)
	}
	if wantSkip := map[string]int{OutcomeDuplicate: 1, OutcomeMalformed: 4}; !reflect.DeepEqual(st.OutcomesSkipped, wantSkip) {
		t.Errorf("skipped = %v, want %v", st.OutcomesSkipped, wantSkip)
	}
}

func TestReadStaysArchive(t *testing.T) {
	big := strings.Repeat("00:10,HR,70\n", MaxStayFileBytes/12+10)
	archive := writeArchive(t, []archiveFile{
		{name: "set-a/", dir: true},
		{name: "set-a/30.txt", body: stayFile(30, 3, "00:10,HR,70", "00:20,MechVent,1", "00:30,HR,-1")},
		{name: "set-a/10.txt", body: stayFile(10, 1, "00:10,HR,60")},
		{name: "set-a/20.txt", body: stayFile(20, 4)},
		{name: "other/20.txt", body: stayFile(20, 4)},             // duplicate record
		{name: "set-a/40.txt", body: stayFile(41, 4)},             // id mismatch
		{name: "set-a/._50.txt", body: "junk"},                    // bad name
		{name: "set-a/README", body: "junk"},                      // bad name
		{name: "set-a/60.txt", body: "00:00,RecordID,60\n" + big}, // too large
	})
	outcomes := writeFile(t, "Outcomes.txt", "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n10,1,2,3,4,1\n30,5,6,7,-1,0\n")

	var ids []int
	st, err := ReadStays(context.Background(), archive, outcomes, func(s *Stay) error {
		ids = append(ids, s.RecordID)
		switch s.RecordID {
		case 10:
			if s.Outcome != (Outcome{1, 2, 3, 4, true}) {
				t.Errorf("record 10 outcome = %+v", s.Outcome)
			}
		case 20:
			if s.Outcome != (Outcome{-1, -1, -1, -1, false}) {
				t.Errorf("record 20 outcome = %+v", s.Outcome)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids, []int{10, 20, 30}) {
		t.Errorf("ids = %v, want [10 20 30]", ids)
	}
	want := &Stats{
		Stays:              3,
		ByICUType:          map[int]int{1: 1, 3: 1, 4: 1},
		Deaths:             1,
		NoOutcome:          1,
		Rows:               map[string]int{"HR": 2, "MechVent": 1},
		Skipped:            map[string]int{ReasonMissingValue: 1},
		MissingDescriptors: map[string]int{DescHeight: 3, DescWeight: 3},
		StaysSkipped:       map[string]int{StayDuplicate: 1, StayRecordIDMismatch: 1, StayBadName: 2, StayTooLarge: 1},
		OutcomesSkipped:    map[string]int{},
		Unmapped:           map[string]int{},
	}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("stats = %+v\nwant    %+v", st, want)
	}
	if st.TotalRows() != 3 {
		t.Errorf("TotalRows = %d, want 3", st.TotalRows())
	}
}

func TestReadStaysErrors(t *testing.T) {
	good := writeArchive(t, []archiveFile{
		{name: "set-a/1.txt", body: stayFile(1, 1, "00:10,HR,70")},
		{name: "set-a/2.txt", body: stayFile(2, 2, "00:10,HR,70")},
	})
	notGzip := writeFile(t, "plain.tar.gz", "not gzip")
	// A valid gzip stream of something that is not a tar.
	badTar := writeFile(t, "bad.tar.gz", string(gzipBytes(t, []byte(strings.Repeat("x", 700)))))
	stop := errors.New("stop")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name     string
		ctx      context.Context
		archive  string
		outcomes string
		fn       func(*Stay) error
		want     error
		stays    int
	}{
		{"nil callback", context.Background(), good, "", nil, ErrNilCallback, 0},
		{"missing archive", context.Background(), filepath.Join(t.TempDir(), "none.tar.gz"), "", func(*Stay) error { return nil }, ErrArchive, 0},
		{"not gzip", context.Background(), notGzip, "", func(*Stay) error { return nil }, ErrArchive, 0},
		{"bad tar", context.Background(), badTar, "", func(*Stay) error { return nil }, ErrArchive, 0},
		{"missing outcomes", context.Background(), good, filepath.Join(t.TempDir(), "none.txt"), func(*Stay) error { return nil }, ErrOutcomes, 0},
		{"callback error stops", context.Background(), good, "", func(*Stay) error { return stop }, stop, 1},
		{"cancelled", cancelled, good, "", func(*Stay) error { return nil }, context.Canceled, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ReadStays(tc.ctx, tc.archive, tc.outcomes, tc.fn)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if st == nil || st.Stays != tc.stays {
				t.Fatalf("stats = %+v, want %d stays", st, tc.stays)
			}
		})
	}
}

// FuzzParseStay checks that no stay file makes the parser panic, and that
// what it returns keeps the Stay invariants.
func FuzzParseStay(f *testing.F) {
	f.Add([]byte(stayFile(7, 4, "00:07,HR,73", "00:07,NIMAP,92.33", "48:00,Urine,-1")))
	f.Add([]byte("00:00,RecordID,7\r\n00:00,Weight,1e308\n00:10,pH,735\n"))
	f.Add([]byte("00:00,Age,NaN\n,,\n::,HR,1\n99999:00,HR,1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, skipped, reason := parseStay(7, b)
		if reason != "" {
			if s != nil {
				t.Fatal("stay returned with a skip reason")
			}
			return
		}
		for _, n := range skipped {
			if n < 0 {
				t.Fatal("negative skip count")
			}
		}
		for i, r := range s.Rows {
			if i > 0 && s.Rows[i-1].Minute > r.Minute {
				t.Fatal("rows not sorted")
			}
			if r.Minute < 0 || r.Minute > MaxMinute || r.Value == -1 || math.IsNaN(r.Value) || math.IsInf(r.Value, 0) {
				t.Fatalf("bad row %+v", r)
			}
			if _, ok := Lookup(r.Param); !ok {
				t.Fatalf("unknown parameter kept")
			}
		}
		if err := ToRecords(s, DefaultAdmit(7), &recSink{}); err != nil {
			t.Fatalf("ToRecords on a parsed stay: %v", err)
		}
	})
}

// FuzzReadOutcomes checks that no outcomes file makes the reader panic.
func FuzzReadOutcomes(f *testing.F) {
	f.Add([]byte("RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n132539,6,1,5,-1,0\n"))
	f.Add([]byte("1,2,3,4,5,6\n,,,,,\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st := NewStats()
		out, err := readOutcomes(strings.NewReader(string(b)), st)
		if err != nil {
			return
		}
		for id := range out {
			if id <= 0 {
				t.Fatal("non-positive record id kept")
			}
		}
	})
}
