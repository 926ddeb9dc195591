package physionet

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cohort-fl/cohort/agent/fhir"
)

// independentCount is a plain scan of the archive with archive/tar and
// encoding/csv, sharing no code with the reader.
type independentCount struct {
	files      int
	rows       map[string]int     // time-series rows kept, by parameter
	sums       map[string]float64 // sum of kept values, by parameter
	params     map[string]bool    // every parameter name seen
	minus1     int                // time-series rows with value -1
	missHeight int
	missWeight int
	missGender int
	byICU      map[int]int
	deaths     int
}

func countIndependently(t *testing.T, dir string) *independentCount {
	t.Helper()
	c := &independentCount{rows: map[string]int{}, sums: map[string]float64{}, params: map[string]bool{}, byICU: map[int]int{}}
	f, err := os.Open(filepath.Join(dir, SetAArchive))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(h.Name, ".txt") {
			continue
		}
		c.files++
		recs, err := csv.NewReader(tr).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		sawHeight, sawWeight := false, false
		for _, r := range recs[1:] { // recs[0] is the header
			tm, p, v := r[0], r[1], r[2]
			c.params[p] = true
			switch {
			case p == "RecordID" || p == "Age":
				continue
			case p == "Gender":
				if v == "-1" {
					c.missGender++
				}
				continue
			case p == "ICUType":
				n, _ := strconv.Atoi(v)
				c.byICU[n]++
				continue
			case p == "Height" && tm == "00:00" && !sawHeight:
				sawHeight = true
				if v == "-1" {
					c.missHeight++
				}
				continue
			case p == "Weight" && tm == "00:00" && !sawWeight:
				sawWeight = true
				if v == "-1" {
					c.missWeight++
				}
				continue
			}
			if v == "-1" {
				c.minus1++
				continue
			}
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("unparsable value in the data")
			}
			c.rows[p]++
			c.sums[p] += x
		}
	}
	of, err := os.Open(filepath.Join(dir, SetAOutcomes))
	if err != nil {
		t.Fatal(err)
	}
	defer of.Close()
	recs, err := csv.NewReader(of).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs[1:] {
		if r[5] == "1" {
			c.deaths++
		}
	}
	return c
}

func TestRealDataReadStays(t *testing.T) {
	if testing.Short() {
		t.Skip("reads all 4,000 stays of set A (no concurrency: the race run gains nothing)")
	}
	t.Parallel()
	dir := dataDir(t)
	want := countIndependently(t, dir)
	t.Run("mapping covers the data", func(t *testing.T) { checkMappingCovers(t, want) })

	sums := map[string]float64{}
	prev := 0
	st, err := ReadStays(context.Background(), filepath.Join(dir, SetAArchive), filepath.Join(dir, SetAOutcomes), func(s *Stay) error {
		if s.RecordID <= prev {
			t.Errorf("record %d delivered after %d", s.RecordID, prev)
		}
		prev = s.RecordID
		for i, r := range s.Rows {
			if i > 0 && s.Rows[i-1].Minute > r.Minute {
				t.Errorf("record %d: rows not sorted", s.RecordID)
			}
			sums[r.Param] += r.Value
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.Stays != 4000 || want.files != 4000 {
		t.Errorf("stays = %d, files = %d, want 4000", st.Stays, want.files)
	}
	if w := map[int]int{1: 577, 2: 874, 3: 1481, 4: 1068}; !reflect.DeepEqual(st.ByICUType, w) || !reflect.DeepEqual(want.byICU, w) {
		t.Errorf("by ICU type = %v (independent %v), want %v", st.ByICUType, want.byICU, w)
	}
	if st.Deaths != 554 || want.deaths != 554 {
		t.Errorf("deaths = %d (independent %d), want 554", st.Deaths, want.deaths)
	}
	if st.NoOutcome != 0 || len(st.StaysSkipped) != 0 || len(st.OutcomesSkipped) != 0 {
		t.Errorf("no outcome %d, stays skipped %v, outcomes skipped %v", st.NoOutcome, st.StaysSkipped, st.OutcomesSkipped)
	}
	if !reflect.DeepEqual(st.Rows, want.rows) {
		t.Errorf("rows by parameter differ from the independent count:\n got %v\nwant %v", st.Rows, want.rows)
	}
	for p, s := range want.sums {
		if math.Abs(sums[p]-s) > 1e-9*math.Max(1, math.Abs(s)) {
			t.Errorf("%s: sum of values %v, independent %v", p, sums[p], s)
		}
	}
	wantSkipped := map[string]int{}
	if want.minus1 > 0 {
		wantSkipped[ReasonMissingValue] = want.minus1
	}
	if !reflect.DeepEqual(st.Skipped, wantSkipped) {
		t.Errorf("skipped = %v, want %v", st.Skipped, wantSkipped)
	}
	wantMissing := map[string]int{DescHeight: want.missHeight, DescWeight: want.missWeight, DescGender: want.missGender}
	if !reflect.DeepEqual(st.MissingDescriptors, wantMissing) {
		t.Errorf("missing descriptors = %v, want %v", st.MissingDescriptors, wantMissing)
	}

	// Report the counts.
	names := make([]string, 0, len(st.Rows))
	for p := range st.Rows {
		names = append(names, p)
	}
	sort.Strings(names)
	mapped, vitals := 0, 0
	isVital := map[string]bool{}
	for _, p := range DefaultVitalParams() {
		isVital[p] = true
	}
	var b strings.Builder
	for _, p := range names {
		n := st.Rows[p]
		info, _ := Lookup(p)
		if info.Mapped() {
			mapped += n
		}
		if isVital[p] {
			vitals += n
		}
		b.WriteString(p + "=" + strconv.Itoa(n) + " ")
	}
	t.Logf("stays %d, by ICU type %v, deaths %d, missing descriptors %v, skipped %v", st.Stays, st.ByICUType, st.Deaths, st.MissingDescriptors, st.Skipped)
	t.Logf("rows by parameter: %s", b.String())
	t.Logf("rows %d, mapped rows %d, device-vital rows %d", st.TotalRows(), mapped, vitals)
}

// checkMappingCovers checks that every parameter in the data is a
// descriptor or in the table, and that only MechVent has no LOINC code.
func checkMappingCovers(t *testing.T, c *independentCount) {
	descriptor := map[string]bool{"RecordID": true, "Age": true, "Gender": true, "Height": true, "ICUType": true, "Weight": true}
	var unknown, unmapped []string
	for p := range c.params {
		info, ok := Lookup(p)
		switch {
		case !ok && !descriptor[p]:
			unknown = append(unknown, p)
		case ok && !info.Mapped():
			unmapped = append(unmapped, p)
		}
	}
	sort.Strings(unmapped)
	if len(unknown) > 0 {
		t.Errorf("parameters in the data the table does not know: %v", unknown)
	}
	if !slices.Equal(unmapped, []string{"MechVent"}) {
		t.Errorf("unmapped parameters in the data = %v, want [MechVent]", unmapped)
	}
	t.Logf("%d parameter names in the data; not mapped to LOINC: %v (%d rows)", len(c.params), unmapped, c.rows["MechVent"])
}

func TestRealDataImport(t *testing.T) {
	if testing.Short() {
		t.Skip("imports set A four times (no concurrency: the race run gains nothing)")
	}
	t.Parallel()
	dir := dataDir(t)
	ctx := context.Background()

	// The rows are checked against an independent count in
	// TestRealDataReadStays; here the records are checked against the rows.
	sink := &countSink{}
	st, err := Import(ctx, dir, nil, nil, sink)
	if err != nil {
		t.Fatal(err)
	}
	mappedRows := 0
	for p, n := range st.Rows {
		if info, _ := Lookup(p); info.Mapped() {
			mappedRows += n
			if sink.byCode[info.LOINC] != n+map[string]int{
				DescHeight: 4000 - st.MissingDescriptors[DescHeight],
				DescWeight: 4000 - st.MissingDescriptors[DescWeight],
			}[p] {
				t.Errorf("%s: %d observations for %d rows", p, sink.byCode[info.LOINC], n)
			}
		}
	}
	static := (4000 - st.MissingDescriptors[DescHeight]) + (4000 - st.MissingDescriptors[DescWeight])
	if sink.patients != 4000 || sink.encounters != 4000 || st.Patients != 4000 || st.Encounters != 4000 {
		t.Errorf("patients %d/%d, encounters %d/%d, want 4000", sink.patients, st.Patients, sink.encounters, st.Encounters)
	}
	if sink.observations != mappedRows+static || st.Observations != sink.observations {
		t.Errorf("observations = %d (stats %d), want %d mapped rows + %d admission heights and weights", sink.observations, st.Observations, mappedRows, static)
	}
	if !reflect.DeepEqual(st.Unmapped, map[string]int{"MechVent": st.Rows["MechVent"]}) {
		t.Errorf("unmapped = %v", st.Unmapped)
	}
	if st.Filtered != 0 || st.Stays != 4000 || st.Deaths != 554 {
		t.Errorf("import stats: %d stays, %d filtered, %d deaths", st.Stays, st.Filtered, st.Deaths)
	}
	t.Logf("observations %d: %d mapped rows + %d admission heights/weights; %d MechVent rows unmapped", sink.observations, mappedRows, static, st.Unmapped["MechVent"])

	// A site of one ICU type.
	for icu, n := range map[int]int{1: 577} {
		sink := &countSink{}
		st, err := Import(ctx, dir, nil, func(s *Stay) bool { return s.ICUType == icu }, sink)
		if err != nil {
			t.Fatal(err)
		}
		if st.Stays != n || st.Filtered != 4000-n || sink.patients != n || !reflect.DeepEqual(st.ByICUType, map[int]int{icu: n}) {
			t.Errorf("ICU type %d: stays %d, filtered %d, patients %d, by type %v", icu, st.Stays, st.Filtered, sink.patients, st.ByICUType)
		}
	}
}

// readNDJSONFile returns the JSON lines of an NDJSON file (gunzipped when
// its name ends in .gz).
func readNDJSONFile(t *testing.T, p string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(p, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, append([]byte(nil), sc.Bytes()...))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

func TestRealDataWriteNDJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("converts set A to NDJSON twice (no concurrency: the race run gains nothing)")
	}
	t.Parallel()
	dir := dataDir(t)
	ctx := context.Background()
	// A small site: coronary care stays with a RecordID divisible by 5.
	filter := func(s *Stay) bool { return s.ICUType == 1 && s.RecordID%5 == 0 }
	admit := func(id int) time.Time {
		return time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(id%1000) * time.Hour)
	}

	out1, out2 := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	st, err := WriteNDJSON(ctx, dir, out1, filter, admit)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteNDJSON(ctx, dir, out2, filter, admit); err != nil {
		t.Fatal(err)
	}
	if st.Stays < 50 || st.Patients != st.Stays || st.Encounters != st.Stays {
		t.Fatalf("stats: %d stays, %d patients, %d encounters", st.Stays, st.Patients, st.Encounters)
	}

	// Deterministic bytes; nothing else left in the directory.
	entries, err := os.ReadDir(out1)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", e.Name(), info.Mode().Perm())
		}
		a, _ := os.ReadFile(filepath.Join(out1, e.Name()))
		b, _ := os.ReadFile(filepath.Join(out2, e.Name()))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two runs", e.Name())
		}
	}
	if !slices.Equal(names, []string{EncounterFile, ObservationFile, PatientFile}) {
		t.Errorf("files = %v", names)
	}

	// Every line is FHIR JSON of the file's resource type with the
	// required elements.
	type coding struct{ System, Code string }
	type check struct {
		file  string
		typ   string
		count int
	}
	for _, c := range []check{{PatientFile, "Patient", st.Patients}, {EncounterFile, "Encounter", st.Encounters}, {ObservationFile, "Observation", st.Observations}} {
		lines := readNDJSONFile(t, filepath.Join(out1, c.file))
		if len(lines) != c.count {
			t.Errorf("%s: %d lines, want %d", c.file, len(lines), c.count)
		}
		for i, line := range lines {
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatalf("%s line %d: %v", c.file, i+1, err)
			}
			if m["resourceType"] != c.typ {
				t.Fatalf("%s line %d: resourceType %v", c.file, i+1, m["resourceType"])
			}
			id, _ := m["id"].(string)
			if id == "" || len(id) > 64 || strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") != "" {
				t.Fatalf("%s line %d: bad id", c.file, i+1)
			}
			switch c.typ {
			case "Patient":
				var p struct {
					Gender          string `json:"gender"`
					DeceasedBoolean *bool  `json:"deceasedBoolean"`
				}
				_ = json.Unmarshal(line, &p)
				if p.DeceasedBoolean == nil || (p.Gender != "male" && p.Gender != "female" && p.Gender != "unknown") {
					t.Fatalf("Patient line %d: %s", i+1, line)
				}
			case "Encounter":
				var e struct {
					Status  string `json:"status"`
					Class   coding `json:"class"`
					Subject struct{ Reference string }
					Period  struct{ Start, End string }
					Hosp    *struct {
						DischargeDisposition struct{ Coding []coding } `json:"dischargeDisposition"`
					} `json:"hospitalization"`
				}
				_ = json.Unmarshal(line, &e)
				if e.Status != "finished" || e.Class != (coding{"http://terminology.hl7.org/CodeSystem/v3-ActCode", "ICU"}) ||
					!strings.HasPrefix(e.Subject.Reference, "Patient/physionet-") {
					t.Fatalf("Encounter line %d: %s", i+1, line)
				}
				if _, err := time.Parse(time.RFC3339, e.Period.Start); err != nil {
					t.Fatalf("Encounter line %d: period.start", i+1)
				}
				if e.Hosp != nil && (len(e.Hosp.DischargeDisposition.Coding) != 1 ||
					e.Hosp.DischargeDisposition.Coding[0] != (coding{"http://terminology.hl7.org/CodeSystem/discharge-disposition", "exp"})) {
					t.Fatalf("Encounter line %d: dischargeDisposition", i+1)
				}
			case "Observation":
				var o struct {
					Status   string `json:"status"`
					Category []struct{ Coding []coding }
					Code     struct{ Coding []coding }
					Subject  struct{ Reference string }
					Effect   string `json:"effectiveDateTime"`
					Value    *struct {
						Value        *float64
						Unit, System string
						Code         string
					} `json:"valueQuantity"`
				}
				_ = json.Unmarshal(line, &o)
				if o.Status != "final" || len(o.Code.Coding) != 1 || o.Code.Coding[0].System != "http://loinc.org" ||
					!loincCheckDigitOK(o.Code.Coding[0].Code) || len(o.Category) != 1 ||
					!strings.HasPrefix(o.Subject.Reference, "Patient/physionet-") || o.Value == nil || o.Value.Value == nil ||
					o.Value.System != "http://unitsofmeasure.org" || o.Value.Code == "" || o.Value.Code != o.Value.Unit {
					t.Fatalf("Observation line %d: %s", i+1, line)
				}
				if _, err := time.Parse(time.RFC3339, o.Effect); err != nil {
					t.Fatalf("Observation line %d: effectiveDateTime", i+1)
				}
			}
		}
	}

	// Read back with the agent's FHIR reader (no plausibility filter):
	// exactly the records Import sends.
	var fromFiles, direct fhir.Collector
	rst, err := fhir.ReadDirWith(ctx, out1, &fromFiles, fhir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rst.TotalRejected() != 0 || len(rst.Skipped) != 0 {
		t.Errorf("fhir reader rejected %v, skipped %v", rst.Rejected, rst.Skipped)
	}
	if _, err := Import(ctx, dir, admit, filter, &direct); err != nil {
		t.Fatal(err)
	}
	a, b := fromFiles.Patients(), direct.Patients()
	if len(a) != st.Patients || !reflect.DeepEqual(a, b) {
		t.Errorf("records read back from the NDJSON differ from Import's (%d vs %d patients)", len(a), len(b))
	}

	// With the reader's defaults, implausible values are rejected.
	dst, err := fhir.ReadDir(ctx, out1, &fhir.Collector{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NDJSON of %d stays: %d patients, %d encounters, %d observations; the FHIR reader's defaults reject %v", st.Stays, st.Patients, st.Encounters, st.Observations, dst.Rejected)
}

func TestWriteNDJSONErrors(t *testing.T) {
	// A data directory without the files: the error is returned and no
	// output or temporary file is left.
	out := filepath.Join(t.TempDir(), "out")
	_, err := WriteNDJSON(context.Background(), t.TempDir(), out, nil, nil)
	if !errors.Is(err, ErrOutcomes) && !errors.Is(err, ErrArchive) {
		t.Fatalf("err = %v", err)
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 0 {
		t.Errorf("left %d files behind", len(entries))
	}
}

func TestWriteNDJSONSynthetic(t *testing.T) {
	dir := t.TempDir()
	archive := writeArchive(t, []archiveFile{
		{name: "set-a/7.txt", body: stayFile(7, 2, "00:07,HR,73", "00:07,MechVent,1", "00:37,NIMAP,92.33")},
	})
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, SetAArchive), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, SetAOutcomes), []byte("RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n7,1,2,3,2,1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	if _, err := WriteNDJSON(context.Background(), dir, out, nil, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		PatientFile:   {`{"resourceType":"Patient","id":"physionet-7","gender":"female","birthDate":"1958-01-01","deceasedBoolean":true}`},
		EncounterFile: {`{"resourceType":"Encounter","id":"physionet-7-icu","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"ICU","display":"intensive care unit"},"subject":{"reference":"Patient/physionet-7"},"period":{"start":"2012-01-01T00:00:00Z","end":"2012-01-04T00:00:00Z"},"hospitalization":{"dischargeDisposition":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/discharge-disposition","code":"exp","display":"Expired"}]}}}`},
		ObservationFile: {
			`{"resourceType":"Observation","id":"physionet-7-7-HR","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"Vital Signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}],"text":"HR"},"subject":{"reference":"Patient/physionet-7"},"encounter":{"reference":"Encounter/physionet-7-icu"},"effectiveDateTime":"2012-01-01T00:07:00Z","valueQuantity":{"value":73,"unit":"/min","system":"http://unitsofmeasure.org","code":"/min"}}`,
			`{"resourceType":"Observation","id":"physionet-7-37-NIMAP","status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"Vital Signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8478-0","display":"Mean blood pressure"}],"text":"NIMAP"},"subject":{"reference":"Patient/physionet-7"},"encounter":{"reference":"Encounter/physionet-7-icu"},"effectiveDateTime":"2012-01-01T00:37:00Z","valueQuantity":{"value":92.33,"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}`,
		},
	}
	for file, lines := range want {
		got := readNDJSONFile(t, filepath.Join(out, file))
		if len(got) != len(lines) {
			t.Fatalf("%s: %d lines, want %d", file, len(got), len(lines))
		}
		for i := range lines {
			if string(got[i]) != lines[i] {
				t.Errorf("%s line %d:\n got %s\nwant %s", file, i+1, got[i], lines[i])
			}
		}
	}
}
