package physionet

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
)

// Limits of the reader.
const (
	// MaxStayFileBytes is the largest stay file read; a larger one is
	// skipped whole (reason "too-large"). The largest file of set-a is
	// about 24 KB.
	MaxStayFileBytes = 4 << 20
	// MaxArchiveBytes bounds the total size of the stay files the reader
	// holds at once (set-a expands to about 35 MB); beyond it ReadStays
	// fails with ErrArchiveTooLarge.
	MaxArchiveBytes = 1 << 30
	// MaxMinute is the latest row time accepted (9999:59); later times
	// are skipped as "bad-time".
	MaxMinute = 9999*60 + 59
)

// Row skip reasons (keys of Stats.Skipped).
const (
	// ReasonMissingValue: a time-series row whose value is -1.
	ReasonMissingValue = "missing-value"
	// ReasonUnknownParameter: a parameter the table does not know.
	ReasonUnknownParameter = "unknown-parameter"
	// ReasonMalformedRow: not three fields, a value that is not a finite
	// number, a descriptor at a time other than 00:00 or with a
	// non-integer value where one is required.
	ReasonMalformedRow = "malformed-row"
	// ReasonBadTime: a time that is not HH:MM (MM < 60, at most MaxMinute).
	ReasonBadTime = "bad-time"
	// ReasonDuplicateDescriptor: RecordID, Age, Gender or ICUType given a
	// second time (the first is kept).
	ReasonDuplicateDescriptor = "duplicate-descriptor"
)

// Stay skip reasons (keys of Stats.StaysSkipped).
const (
	// StayBadName: an archive file not named <RecordID>.txt.
	StayBadName = "bad-name"
	// StayTooLarge: a stay file larger than MaxStayFileBytes.
	StayTooLarge = "too-large"
	// StayRecordIDMismatch: the RecordID row differs from the file name.
	StayRecordIDMismatch = "record-id-mismatch"
	// StayDuplicate: a second file for the same RecordID.
	StayDuplicate = "duplicate-record"
)

// Outcome line skip reasons (keys of Stats.OutcomesSkipped).
const (
	// OutcomeMalformed: not six integer fields, or In-hospital_death not
	// 0 or 1.
	OutcomeMalformed = "malformed-outcome"
	// OutcomeDuplicate: a second line for the same RecordID (the first
	// is kept).
	OutcomeDuplicate = "duplicate-outcome"
)

// Stay is one ICU stay of the PhysioNet/CinC Challenge 2012: the general
// descriptors recorded at admission, the outcome, and the time series.
type Stay struct {
	// RecordID is PhysioNet's record id (the file name).
	RecordID int
	// Age is the age in years; -1 when missing.
	Age float64
	// Gender is 0 (female), 1 (male) or -1 (missing).
	Gender int
	// Height (cm) and Weight (kg) are the values at admission; -1 when
	// missing.
	Height, Weight float64
	// ICUType is 1 coronary care, 2 cardiac surgery recovery, 3 medical,
	// 4 surgical; -1 when missing.
	ICUType int
	// Outcome is the joined outcome; every field -1 (and no death) when
	// the outcomes file has no line for the stay.
	Outcome Outcome
	// Rows are the time-series rows, sorted by Minute (file order among
	// equal minutes). Descriptors and missing values (-1) are not rows.
	Rows []Row
}

// Row is one time-series measurement.
type Row struct {
	// Minute is the time since ICU admission in minutes.
	Minute int
	// Param is the PhysioNet parameter name (a name Lookup knows).
	Param string
	// Value is the measured value, in the unit of Lookup(Param).Unit.
	Value float64
}

// Outcome is one line of Outcomes-a.txt. -1 means missing.
type Outcome struct {
	// SAPS is the SAPS-I score; SOFA the SOFA score.
	SAPS, SOFA int
	// LengthOfStay is the length of stay in days.
	LengthOfStay int
	// Survival is the number of days from ICU admission to death; -1 for
	// a patient not known to have died.
	Survival int
	// InHospitalDeath is true when the patient died in hospital.
	InHospitalDeath bool
}

// Stats counts what a reader saw. Keys are parameter names, reasons or ICU
// types, never values from the data.
type Stats struct {
	// Stays is the number of stays delivered.
	Stays int
	// ByICUType counts delivered stays by ICUType (-1: missing).
	ByICUType map[int]int
	// Deaths counts delivered stays with an in-hospital death.
	Deaths int
	// NoOutcome counts delivered stays the outcomes file has no line for.
	NoOutcome int
	// Rows counts the time-series rows of delivered stays, by parameter.
	Rows map[string]int
	// Skipped counts rows of delivered stays that were skipped, by
	// reason (Reason* constants).
	Skipped map[string]int
	// MissingDescriptors counts delivered stays whose descriptor is
	// missing (-1 or absent), by descriptor name.
	MissingDescriptors map[string]int
	// StaysSkipped counts archive files skipped whole, by reason (Stay*
	// constants).
	StaysSkipped map[string]int
	// OutcomesSkipped counts unusable outcome lines, by reason (Outcome*
	// constants).
	OutcomesSkipped map[string]int

	// Filtered counts stays dropped by a filter (Import, WriteNDJSON).
	// They are not counted anywhere above.
	Filtered int
	// Unmapped counts rows not turned into Observations because their
	// parameter has no LOINC mapping, by parameter (Import, WriteNDJSON).
	Unmapped map[string]int
	// Patients, Encounters and Observations count the records emitted
	// (Import, WriteNDJSON).
	Patients, Encounters, Observations int
}

// NewStats returns empty Stats with every map allocated.
func NewStats() *Stats {
	return &Stats{
		ByICUType:          map[int]int{},
		Rows:               map[string]int{},
		Skipped:            map[string]int{},
		MissingDescriptors: map[string]int{},
		StaysSkipped:       map[string]int{},
		OutcomesSkipped:    map[string]int{},
		Unmapped:           map[string]int{},
	}
}

// TotalRows returns the sum of Rows.
func (s *Stats) TotalRows() int {
	n := 0
	for _, v := range s.Rows {
		n += v
	}
	return n
}

// addStay counts a delivered stay and its per-stay skip counts.
func (s *Stats) addStay(st *Stay, skipped *skipCounts, hasOutcome bool) {
	s.Stays++
	s.ByICUType[st.ICUType]++
	if st.Outcome.InHospitalDeath {
		s.Deaths++
	}
	if !hasOutcome {
		s.NoOutcome++
	}
	for _, r := range st.Rows {
		s.Rows[r.Param]++
	}
	for i, n := range skipped {
		if n > 0 {
			s.Skipped[rowReason(i)] += n
		}
	}
	if st.Age == -1 {
		s.MissingDescriptors[DescAge]++
	}
	if st.Gender == -1 {
		s.MissingDescriptors[DescGender]++
	}
	if st.Height == -1 {
		s.MissingDescriptors[DescHeight]++
	}
	if st.Weight == -1 {
		s.MissingDescriptors[DescWeight]++
	}
	if st.ICUType == -1 {
		s.MissingDescriptors[DescICUType]++
	}
}

// Indexes of skipCounts.
const (
	skipMissing = iota
	skipUnknown
	skipMalformed
	skipBadTime
	skipDupDescriptor
	numSkipReasons
)

// rowReason returns the reason string of a skipCounts index.
func rowReason(i int) string {
	switch i {
	case skipMissing:
		return ReasonMissingValue
	case skipUnknown:
		return ReasonUnknownParameter
	case skipMalformed:
		return ReasonMalformedRow
	case skipBadTime:
		return ReasonBadTime
	default:
		return ReasonDuplicateDescriptor
	}
}

// skipCounts counts one stay's skipped rows by reason (index: skip*).
type skipCounts [numSkipReasons]int

// ReadStays streams every stay of a PhysioNet 2012 archive (a tar.gz of
// <RecordID>.txt files, e.g. set-a.tar.gz) to fn, sorted by RecordID, with
// its outcome joined from outcomesPath (e.g. Outcomes-a.txt; "" joins
// none). The archive is read once and never extracted to disk; the stay
// files are held in memory (about 35 MB for set-a) so that stays can be
// delivered in order, each parsed just before it is delivered.
//
// Bad input does not stop the stream: a malformed row is counted in
// Stats.Skipped by reason and skipped, a stay file that cannot be used is
// counted in Stats.StaysSkipped. An error from fn stops the stream and is
// returned wrapped. fn owns the *Stay it receives. On error the Stats so
// far are returned with it.
func ReadStays(ctx context.Context, tarGzPath, outcomesPath string, fn func(*Stay) error) (*Stats, error) {
	st := NewStats()
	if fn == nil {
		return st, ErrNilCallback
	}
	err := readStays(ctx, tarGzPath, outcomesPath, st, func(s *Stay) (bool, error) { return true, fn(s) })
	return st, err
}

// readStays is ReadStays with a callback that can drop a stay from the
// Stats: keep=false counts it in Filtered instead.
func readStays(ctx context.Context, tarGzPath, outcomesPath string, st *Stats, fn func(*Stay) (keep bool, err error)) error {
	outcomes := map[int]Outcome{}
	if outcomesPath != "" {
		f, err := os.Open(outcomesPath)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrOutcomes, err)
		}
		outcomes, err = readOutcomes(f, st)
		_ = f.Close()
		if err != nil {
			return err
		}
	}
	files, err := readArchive(ctx, tarGzPath, st)
	if err != nil {
		return err
	}
	ids := make([]int, 0, len(files))
	for id := range files {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, skipped, reason := parseStay(id, files[id])
		delete(files, id)
		if reason != "" {
			st.StaysSkipped[reason]++
			continue
		}
		o, hasOutcome := outcomes[id]
		if hasOutcome {
			s.Outcome = o
		} else {
			s.Outcome = Outcome{SAPS: -1, SOFA: -1, LengthOfStay: -1, Survival: -1}
		}
		// Count before the callback: fn owns s afterwards.
		one := NewStats()
		one.addStay(s, &skipped, hasOutcome)
		keep, err := fn(s)
		if keep {
			st.merge(one)
		} else {
			st.Filtered++
		}
		if err != nil {
			return fmt.Errorf("record %d: %w", id, err)
		}
	}
	return nil
}

// merge adds the per-stay counts of o to s.
func (s *Stats) merge(o *Stats) {
	s.Stays += o.Stays
	s.Deaths += o.Deaths
	s.NoOutcome += o.NoOutcome
	for k, v := range o.ByICUType {
		s.ByICUType[k] += v
	}
	for k, v := range o.Rows {
		s.Rows[k] += v
	}
	for k, v := range o.Skipped {
		s.Skipped[k] += v
	}
	for k, v := range o.MissingDescriptors {
		s.MissingDescriptors[k] += v
	}
}

// readArchive returns the stay files of a tar.gz by RecordID.
func readArchive(ctx context.Context, p string, st *Stats) (map[int][]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrArchive, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %w", ErrArchive, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	files := map[int][]byte{}
	total := int64(0)
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d: %w", ErrArchive, n, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue // directories, links: not stays
		}
		id, ok := stayID(h.Name)
		if !ok {
			st.StaysSkipped[StayBadName]++
			continue
		}
		if h.Size > MaxStayFileBytes {
			st.StaysSkipped[StayTooLarge]++
			continue
		}
		if _, dup := files[id]; dup {
			st.StaysSkipped[StayDuplicate]++
			continue
		}
		total += h.Size
		if total > MaxArchiveBytes {
			return nil, ErrArchiveTooLarge
		}
		b, err := io.ReadAll(io.LimitReader(tr, MaxStayFileBytes+1))
		if err != nil {
			return nil, fmt.Errorf("%w: record %d: %w", ErrArchive, id, err)
		}
		if len(b) > MaxStayFileBytes {
			st.StaysSkipped[StayTooLarge]++
			continue
		}
		files[id] = b
	}
}

// stayID parses "<dir>/<RecordID>.txt".
func stayID(name string) (int, bool) {
	base, ok := strings.CutSuffix(path.Base(name), ".txt")
	if !ok || base == "" || len(base) > 9 {
		return 0, false
	}
	for _, c := range base {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	id, err := strconv.Atoi(base)
	if err != nil || id <= 0 {
		return 0, false
	}
	return id, true
}

// parseStay parses one stay file. reason is non-empty when the whole stay
// must be skipped.
func parseStay(id int, b []byte) (s *Stay, skipped skipCounts, reason string) {
	s = &Stay{RecordID: id, Age: -1, Gender: -1, Height: -1, Weight: -1, ICUType: -1}
	var seen [6]bool // by d* index below
	const (
		dRecordID = iota
		dAge
		dGender
		dHeight
		dICUType
		dWeight
	)
	first := true
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		line = bytes.TrimSpace(line)
		if first {
			first = false
			if string(line) == "Time,Parameter,Value" {
				continue
			}
		}
		if len(line) == 0 {
			continue
		}
		f1, rest, ok1 := bytes.Cut(line, []byte{','})
		f2, f3, ok2 := bytes.Cut(rest, []byte{','})
		if !ok1 || !ok2 || bytes.IndexByte(f3, ',') >= 0 {
			skipped[skipMalformed]++
			continue
		}
		minute, ok := parseMinute(string(bytes.TrimSpace(f1)))
		if !ok {
			skipped[skipBadTime]++
			continue
		}
		param := string(bytes.TrimSpace(f2))
		v, err := strconv.ParseFloat(string(bytes.TrimSpace(f3)), 64)
		valid := err == nil && !math.IsNaN(v) && !math.IsInf(v, 0)

		// Descriptors.
		d := -1
		switch param {
		case DescRecordID:
			d = dRecordID
		case DescAge:
			d = dAge
		case DescGender:
			d = dGender
		case DescICUType:
			d = dICUType
		case DescHeight:
			if minute == 0 && !seen[dHeight] {
				d = dHeight
			}
		case DescWeight:
			if minute == 0 && !seen[dWeight] {
				d = dWeight
			}
		}
		if d >= 0 {
			switch {
			case seen[d]: // #nosec G602 -- d is one of the d* constants, all below len(seen) (6)
				skipped[skipDupDescriptor]++
				continue
			case minute != 0 || !valid:
				skipped[skipMalformed]++
				continue
			}
			integral := v == math.Trunc(v) && math.Abs(v) < 1<<31
			switch d {
			case dRecordID:
				if !integral {
					skipped[skipMalformed]++
					continue
				}
				if int(v) != id {
					return nil, skipped, StayRecordIDMismatch
				}
			case dAge:
				s.Age = v
			case dGender:
				if !integral {
					skipped[skipMalformed]++
					continue
				}
				s.Gender = int(v)
			case dICUType:
				if !integral {
					skipped[skipMalformed]++
					continue
				}
				s.ICUType = int(v)
			case dHeight:
				s.Height = v
			case dWeight:
				s.Weight = v
			}
			seen[d] = true // #nosec G602 -- d is one of the d* constants, all below len(seen) (6)
			continue
		}

		// Time series.
		info, known := Lookup(param)
		if !known {
			skipped[skipUnknown]++
			continue
		}
		if !valid {
			skipped[skipMalformed]++
			continue
		}
		if v == -1 {
			skipped[skipMissing]++
			continue
		}
		// The table's name string: rows share it instead of one copy each.
		s.Rows = append(s.Rows, Row{Minute: minute, Param: info.Name, Value: v})
	}
	slices.SortStableFunc(s.Rows, func(a, b Row) int { return a.Minute - b.Minute })
	return s, skipped, ""
}

// parseMinute parses "HH:MM" (one or more hour digits, two minute digits).
func parseMinute(s string) (int, bool) {
	h, m, ok := strings.Cut(s, ":")
	if !ok || len(h) == 0 || len(h) > 4 || len(m) != 2 {
		return 0, false
	}
	hh, mm := 0, 0
	for _, c := range h {
		if c < '0' || c > '9' {
			return 0, false
		}
		hh = hh*10 + int(c-'0')
	}
	for _, c := range m {
		if c < '0' || c > '9' {
			return 0, false
		}
		mm = mm*10 + int(c-'0')
	}
	if mm >= 60 {
		return 0, false
	}
	return hh*60 + mm, true
}

// readOutcomes reads an outcomes file: a header line, then
// RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death.
func readOutcomes(r io.Reader, st *Stats) (map[int]Outcome, error) {
	out := map[int]Outcome{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	first := true
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if first {
			first = false
			if strings.HasPrefix(line, "RecordID") {
				continue
			}
		}
		if line == "" {
			continue
		}
		fields := strings.Split(line, ",")
		if len(fields) != 6 {
			st.OutcomesSkipped[OutcomeMalformed]++
			continue
		}
		var n [6]int
		ok := true
		for i, fv := range fields {
			v, err := strconv.Atoi(strings.TrimSpace(fv))
			if err != nil || v < -1 || v > 1<<30 {
				ok = false
				break
			}
			n[i] = v
		}
		if !ok || n[0] <= 0 || (n[5] != 0 && n[5] != 1) {
			st.OutcomesSkipped[OutcomeMalformed]++
			continue
		}
		if _, dup := out[n[0]]; dup {
			st.OutcomesSkipped[OutcomeDuplicate]++
			continue
		}
		out[n[0]] = Outcome{SAPS: n[1], SOFA: n[2], LengthOfStay: n[3], Survival: n[4], InHospitalDeath: n[5] == 1}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOutcomes, err)
	}
	return out, nil
}
