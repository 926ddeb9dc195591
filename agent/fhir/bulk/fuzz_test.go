package bulk

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzParseManifest feeds arbitrary bytes to the manifest parser: it must
// return a manifest whose every URL passed the checks, or an error, and
// never panic.
func FuzzParseManifest(f *testing.F) {
	for _, s := range []string{
		`{"transactionTime":"2025-03-01T12:00:00Z","request":"x","requiresAccessToken":true,"output":[{"type":"Patient","url":"https://ehr.example.org/fhir/f/1","count":3}],"error":[]}`,
		`{"transactionTime":"2025-03-01T12:00:00.123+02:00","output":[{"type":"Patient","url":"/f/1"}],"deleted":[{"type":"Bundle","url":"f/2"}]}`,
		`{"transactionTime":"x"}`, `{"output":[{"count":-1}]}`, `[]`, `null`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	c, err := New(Config{BaseURL: "https://ehr.example.org/fhir", ClientID: "c", PrivateKey: testKey(f)})
	if err != nil {
		f.Fatal(err)
	}
	status, _ := url.Parse("https://ehr.example.org/fhir/_status/1")
	f.Fuzz(func(t *testing.T, b []byte) {
		resp := &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader(b)),
			Request: &http.Request{Method: http.MethodGet, URL: status}}
		m, err := parseManifest(resp, c)
		if err != nil {
			if m != nil {
				t.Fatal("manifest returned with an error")
			}
			return
		}
		for _, list := range [][]File{m.Output, m.Error, m.Deleted} {
			for _, fl := range list {
				u, err := url.Parse(fl.URL)
				if err != nil || !validTypeName(fl.Type) || fl.Count < -1 {
					t.Fatalf("bad entry %+v", fl)
				}
				if m.RequiresAccessToken && !sameOrigin(u, c.origin) {
					t.Fatalf("foreign url accepted with token: %s", fl.URL)
				}
			}
		}
	})
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1.5", ""} {
		f.Add(s)
	}
	now := time.Date(2015, 10, 21, 7, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := retryAfter(s, now)
		if !ok && d != 0 {
			t.Fatalf("%q: duration %v without ok", s, d)
		}
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("%q: duration %v out of range", s, d)
		}
	})
}

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2015, 10, 21, 7, 28, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 3 ", 3 * time.Second, true},
		{"Wed, 21 Oct 2015 07:28:30 GMT", 30 * time.Second, true},
		{"Wed, 21 Oct 2015 07:00:00 GMT", 0, true},
		{"99999999999999999999", maxRetryAfter, true},
		{"-5", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		t.Run(strings.TrimSpace(tc.in), func(t *testing.T) {
			got, ok := retryAfter(tc.in, now)
			if got != tc.want || ok != tc.ok {
				t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestCountLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0}, {"\n\n", 0}, {"{}", 1}, {"{}\n", 1}, {"{}\r\n{}\r\n", 2}, {"{}\n  \n{}", 2},
		{strings.Repeat("x", 200<<10) + "\n{}", 2},
	} {
		n, err := countLines(t.Context(), strings.NewReader(tc.in))
		if err != nil || n != tc.want {
			t.Errorf("countLines(%.20q) = %d, %v; want %d", tc.in, n, err, tc.want)
		}
	}
}
