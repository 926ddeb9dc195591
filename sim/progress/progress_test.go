package progress

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// safeBuffer is a bytes.Buffer for concurrent writers.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func forced(w *bytes.Buffer, total int, label string, clock *fakeClock, width int) *Bar {
	return NewWithConfig(w, total, label, Config{Force: true, Now: clock.Now, Width: width})
}

// frames splits output into the lines drawn, without the \r and the
// padding.
func frames(out string) []string {
	var fs []string
	for _, f := range strings.Split(out, "\r")[1:] {
		fs = append(fs, strings.TrimRight(f, " \n"))
	}
	return fs
}

func TestLine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		total   int
		label   string
		done    int
		status  string
		elapsed time.Duration
		want    string
	}{
		{"the example", 10, "round", 3, "round 3  auroc 0.8123", 12 * time.Second,
			"round [######--------------]  3/10  30%  round 3  auroc 0.8123  elapsed 12s  eta 28s"},
		{"start", 10, "sim", 0, "", 0,
			"sim [--------------------]  0/10  0%  elapsed 0s"},
		{"finished, no eta", 4, "sim", 4, "done", 65 * time.Second,
			"sim [####################]  4/4  100%  done  elapsed 1m05s"},
		{"over total", 4, "sim", 9, "", time.Second,
			"sim [####################]  9/4  100%  elapsed 1s"},
		{"negative", 4, "sim", -2, "", time.Second,
			"sim [--------------------]  -2/4  0%  elapsed 1s"},
		{"unknown total", 0, "rounds", 3, "auroc 0.8", 2 * time.Second,
			"rounds  3  auroc 0.8  elapsed 2s"},
		{"no label", 2, "", 1, "", time.Hour + 90*time.Second,
			"[##########----------]  1/2  50%  elapsed 1h02m  eta 1h02m"},
		{"control characters", 2, "a\tb", 1, "x\ny\rz", time.Second,
			"a b [##########----------]  1/2  50%  x y z  elapsed 1s  eta 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			clock := newClock()
			b := forced(&buf, tc.total, tc.label, clock, 200)
			clock.Advance(tc.elapsed)
			b.Set(tc.done, tc.status)
			if got := buf.String(); got != "\r"+tc.want {
				t.Errorf("got  %q\nwant %q", got, "\r"+tc.want)
			}
		})
	}
}

func TestRedrawsAtMostTenTimesASecond(t *testing.T) {
	var buf bytes.Buffer
	clock := newClock()
	b := forced(&buf, 100, "x", clock, 200)
	for i := 1; i <= 100; i++ {
		b.Set(i, "")
		clock.Advance(10 * time.Millisecond) // 100 Sets in one second
	}
	fs := frames(buf.String())
	if len(fs) < 9 || len(fs) > 11 {
		t.Fatalf("%d redraws in one second, want about 10:\n%q", len(fs), fs)
	}
	if !strings.Contains(fs[0], " 1/100 ") || !strings.Contains(fs[1], " 11/100 ") {
		t.Errorf("frames %q, %q: want 1/100 then 11/100", fs[0], fs[1])
	}
	// Done draws the last state even though it came too soon.
	b.Done()
	fs = frames(buf.String())
	if last := fs[len(fs)-1]; !strings.Contains(last, "100/100  100%") {
		t.Errorf("last frame %q, want 100/100", last)
	}
}

func TestDone(t *testing.T) {
	var buf bytes.Buffer
	clock := newClock()
	b := forced(&buf, 3, "x", clock, 200)
	b.Set(1, "one")
	clock.Advance(time.Second)
	b.Set(2, "two")
	clock.Advance(10 * time.Millisecond)
	b.Set(3, "three") // too soon: not drawn yet
	if strings.Contains(buf.String(), "three") {
		t.Fatal("redrew within the interval")
	}
	b.Done()
	b.Done()
	b.Set(1, "after")
	out := buf.String()
	fs := frames(out)
	if last := fs[len(fs)-1]; last != "x [####################]  3/3  100%  three  elapsed 1s" || !strings.HasSuffix(out, "\n") {
		t.Errorf("output ends %q", out)
	}
	if strings.Count(out, "\n") != 1 || strings.Contains(out, "after") {
		t.Errorf("Done not final: %q", out)
	}

	// Done with nothing new since the last draw only ends the line.
	buf.Reset()
	b = forced(&buf, 3, "x", clock, 200)
	b.Set(1, "")
	b.Done()
	if got := strings.Count(buf.String(), "\r"); got != 1 || !strings.HasSuffix(buf.String(), "\n") {
		t.Errorf("%d draws: %q", got, buf.String())
	}

	// Done before any Set draws once, so the line is not empty.
	buf.Reset()
	b = forced(&buf, 3, "x", clock, 200)
	b.Done()
	if got := buf.String(); got != "\rx [--------------------]  0/3  0%  elapsed 0s\n" {
		t.Errorf("got %q", got)
	}
}

func TestCutToWidth(t *testing.T) {
	for _, width := range []int{1, 10, 30, 60} {
		var buf bytes.Buffer
		clock := newClock()
		b := forced(&buf, 10, "a long label", clock, width)
		b.Set(3, strings.Repeat("é", 100))
		clock.Advance(time.Second)
		b.Set(4, "")
		for _, f := range strings.Split(buf.String(), "\r")[1:] {
			if n := len([]rune(f)); n > width-1 && !(width == 1 && n == 0) {
				t.Errorf("width %d: frame of %d columns: %q", width, n, f)
			}
		}
	}
}

func TestShorterLineBlanksTheRest(t *testing.T) {
	var buf bytes.Buffer
	clock := newClock()
	b := forced(&buf, 10, "x", clock, 200)
	b.Set(1, "a long status message")
	long := len(buf.String()) - 1
	buf.Reset()
	clock.Advance(time.Second)
	b.Set(2, "")
	got := strings.TrimPrefix(buf.String(), "\r")
	if len(got) != long || strings.TrimRight(got, " ") == got {
		t.Errorf("second frame %q (%d columns), want padded to %d", got, len(got), long)
	}
}

func TestDefaultWidthIs80(t *testing.T) {
	var buf bytes.Buffer
	b := NewWithConfig(&buf, 10, strings.Repeat("x", 200), Config{Force: true})
	b.Set(1, "")
	if n := len(strings.TrimPrefix(buf.String(), "\r")); n != 79 {
		t.Errorf("line of %d columns, want 79", n)
	}
}

func TestQuietOffTerminal(t *testing.T) {
	regular, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	if fi, err := devNull.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Skipf("%s is not a character device here", os.DevNull)
	}

	for _, tc := range []struct {
		name string
		w    func() *Bar
		ci   string
		want bool
	}{
		{"buffer", func() *Bar { return New(&bytes.Buffer{}, 3, "x") }, "", false},
		{"regular file", func() *Bar { return New(regular, 3, "x") }, "", false},
		{"nil writer", func() *Bar { return New(nil, 3, "x") }, "", false},
		{"character device", func() *Bar { return New(devNull, 3, "x") }, "", true},
		{"character device in CI", func() *Bar { return New(devNull, 3, "x") }, "true", false},
		{"forced in CI", func() *Bar {
			return NewWithConfig(&bytes.Buffer{}, 3, "x", Config{Force: true})
		}, "true", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			if got := tc.w().Enabled(); got != tc.want {
				t.Errorf("Enabled() = %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("disabled bar writes nothing", func(t *testing.T) {
		t.Setenv("CI", "")
		var buf bytes.Buffer
		b := New(&buf, 3, "x")
		b.Set(1, "one")
		b.Set(3, "three")
		b.Done()
		if buf.Len() != 0 {
			t.Errorf("wrote %q", buf.String())
		}
		if _, err := regular.Seek(0, 0); err != nil {
			t.Fatal(err)
		}
		b = New(regular, 3, "x")
		b.Set(1, "one")
		b.Done()
		if fi, err := regular.Stat(); err != nil || fi.Size() != 0 {
			t.Errorf("wrote %d bytes to a regular file (%v)", fi.Size(), err)
		}
	})

	t.Run("nil bar", func(t *testing.T) {
		var b *Bar
		b.Set(1, "x")
		b.Done()
		if b.Enabled() {
			t.Error("nil bar enabled")
		}
	})
}

func TestConcurrentUse(t *testing.T) {
	var buf safeBuffer
	clock := newClock()
	b := NewWithConfig(&buf, 800, "x", Config{Force: true, Now: clock.Now, Width: 200})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				clock.Advance(time.Millisecond * time.Duration(g+1))
				b.Set(g*100+i, "status")
			}
		}()
	}
	wg.Wait()
	b.Done()
	out := buf.String()
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("output does not end with exactly one newline")
	}
	for _, f := range frames(out) {
		if !strings.HasPrefix(f, "x [") || !strings.Contains(f, "/800") {
			t.Errorf("garbled frame %q", f)
		}
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{400 * time.Millisecond, "0s"},
		{12*time.Second + 400*time.Millisecond, "12s"},
		{125 * time.Second, "2m05s"},
		{3*time.Hour + 4*time.Minute + 40*time.Second, "3h05m"},
	} {
		if got := duration(tc.d); got != tc.want {
			t.Errorf("duration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}
