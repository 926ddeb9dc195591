package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path"
	"regexp"
	"strings"
	"testing"
)

// serve sends one request to a mux with the dashboard mounted and an
// unrelated route beside it.
func serve(t *testing.T, method, target string, hdr http.Header) *http.Response {
	t.Helper()
	mux := http.NewServeMux()
	Mount(mux)
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	})
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func embedded(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(static, "static/"+name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSecurityHeaders(t *testing.T) {
	want := map[string]string{
		"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
			"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
		"X-Frame-Options":        "DENY",
	}
	for _, tc := range []struct {
		name, method, target string
		status               int
	}{
		{"page", "GET", "/ui/", 200},
		{"script", "GET", "/ui/app.js", 200},
		{"head", "HEAD", "/ui/style.css", 200},
		{"not found", "GET", "/ui/nope.js", 404},
		{"directory", "GET", "/ui/static/", 404},
		{"redirect", "GET", "/", 302},
		{"method", "POST", "/ui/", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := serve(t, tc.method, tc.target, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			for k, v := range want {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestRedirects(t *testing.T) {
	for _, tc := range []struct {
		name, method, target string
		status               int
		location             string
	}{
		{"root", "GET", "/", http.StatusFound, "/ui/"},
		{"root head", "HEAD", "/", http.StatusFound, "/ui/"},
		{"prefix without slash", "GET", "/ui", 0, "/ui/"}, // the mux's redirect; its code varies by Go release
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := serve(t, tc.method, tc.target, nil)
			status := resp.StatusCode
			if tc.status == 0 && status/100 == 3 {
				status = 0
			}
			if status != tc.status || resp.Header.Get("Location") != tc.location {
				t.Fatalf("%d %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), tc.status, tc.location)
			}
		})
	}
	// Mount claims exactly "/": other paths stay the mux's.
	if resp := serve(t, "GET", "/elsewhere", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /elsewhere: %d, want 404", resp.StatusCode)
	}
	if resp := serve(t, "GET", "/v1/jobs", nil); resp.StatusCode != http.StatusTeapot {
		t.Errorf("GET /v1/jobs: %d, want the other handler's 418", resp.StatusCode)
	}
}

func TestContentTypes(t *testing.T) {
	for _, tc := range []struct {
		target, file, ctype, cache string
	}{
		{"/ui/", "index.html", "text/html; charset=utf-8", "no-store"},
		{"/ui/index.html", "index.html", "text/html; charset=utf-8", "no-store"},
		{"/ui/app.js", "app.js", "text/javascript; charset=utf-8", "no-cache"},
		{"/ui/api.js", "api.js", "text/javascript; charset=utf-8", "no-cache"},
		{"/ui/chart.js", "chart.js", "text/javascript; charset=utf-8", "no-cache"},
		{"/ui/style.css", "style.css", "text/css; charset=utf-8", "no-cache"},
		{"/ui/favicon.svg", "favicon.svg", "image/svg+xml", "no-cache"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			resp := serve(t, "GET", tc.target, nil)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := resp.Header.Get("Cache-Control"); got != tc.cache {
				t.Errorf("Cache-Control %q, want %q", got, tc.cache)
			}
			if got := body(t, resp); got != embedded(t, tc.file) {
				t.Errorf("body is not the embedded %s", tc.file)
			}
		})
	}
}

// Every embedded file is served with a known type, and every module the
// page imports is embedded.
func TestEveryFileServed(t *testing.T) {
	imports := regexp.MustCompile(`(?m)^import .* from '\./([a-z]+\.js)';$`)
	refs := regexp.MustCompile(`(?:src|href)="([a-z]+\.(?:js|css|svg))"`)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		resp := serve(t, "GET", "/ui/"+name, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
		if _, ok := contentTypes[path.Ext(name)]; !ok {
			t.Errorf("%s: no content type for %s", name, path.Ext(name))
		}
		src := embedded(t, name)
		var deps [][]string
		deps = append(deps, imports.FindAllStringSubmatch(src, -1)...)
		deps = append(deps, refs.FindAllStringSubmatch(src, -1)...)
		for _, m := range deps {
			if _, err := fs.Stat(static, "static/"+m[1]); err != nil {
				t.Errorf("%s refers to %s, which is not embedded", name, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNotFound(t *testing.T) {
	index := embedded(t, "index.html")
	for _, target := range []string{
		"/ui/nope.js",
		"/ui/static/",          // the embed directory: no listing
		"/ui/static/app.js",    // nor its layout
		"/ui/app.js/",          // a file as a directory
		"/ui/.",                // the mux redirects to /ui/, the page
		"/ui/web.go",           // nothing outside static/
		"/ui/%2e%2e/web.go",    // nor by escaping
		"/ui/../web/web.go",    // nor by dot segments
		"/ui/APP.JS",           // names are exact
		"/ui/index.html/extra", // nothing below a file
	} {
		t.Run(target, func(t *testing.T) {
			// Follow the mux's path-cleaning redirects.
			loc := target
			resp := serve(t, "GET", loc, nil)
			for i := 0; i < 3 && resp.StatusCode/100 == 3; i++ {
				loc = resp.Header.Get("Location")
				resp = serve(t, "GET", loc, nil)
			}
			b := body(t, resp)
			if strings.Contains(b, "<pre>") {
				t.Errorf("looks like a directory listing: %q", b)
			}
			switch {
			case resp.StatusCode == http.StatusNotFound:
			case loc == "/ui/" && resp.StatusCode == http.StatusOK && b == index:
			default:
				t.Fatalf("%s: status %d, want 404", loc, resp.StatusCode)
			}
		})
	}
}

func TestMethods(t *testing.T) {
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		t.Run(m, func(t *testing.T) {
			resp := serve(t, m, "/ui/app.js", nil)
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Fatalf("status %d, want 405", resp.StatusCode)
			}
			if got := resp.Header.Get("Allow"); got != "GET, HEAD" {
				t.Errorf("Allow %q", got)
			}
		})
	}
	t.Run("HEAD has no body", func(t *testing.T) {
		resp := serve(t, "HEAD", "/ui/app.js", nil)
		if resp.StatusCode != http.StatusOK || body(t, resp) != "" {
			t.Fatalf("HEAD: %d with a body", resp.StatusCode)
		}
		if resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
			t.Errorf("HEAD Content-Type %q", resp.Header.Get("Content-Type"))
		}
	})
}

func TestConditionalGet(t *testing.T) {
	resp := serve(t, "GET", "/ui/app.js", nil)
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	resp = serve(t, "GET", "/ui/app.js", http.Header{"If-None-Match": {etag}})
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: status %d, want 304", resp.StatusCode)
	}
	if resp.Header.Get("Content-Security-Policy") == "" {
		t.Error("304 without the security headers")
	}
	if serve(t, "GET", "/ui/api.js", nil).Header.Get("ETag") == etag {
		t.Error("two files share an ETag")
	}
}

// The CSP forbids inline script and style; the page must not need them.
// And API text must never reach an HTML parser: no innerHTML and its kin
// anywhere in the scripts.
func TestNoInlineCodeAndNoHTMLSinks(t *testing.T) {
	html := embedded(t, "index.html")
	for _, m := range regexp.MustCompile(`(?is)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(html, -1) {
		if !strings.Contains(m[1], "src=") || strings.TrimSpace(m[2]) != "" {
			t.Errorf("index.html has an inline script: %q", m[0])
		}
	}
	for _, re := range []string{`<style`, `\sstyle\s*=`, `\son[a-z]+\s*=`, `javascript:`} {
		if m := regexp.MustCompile(`(?i)` + re).FindString(html); m != "" {
			t.Errorf("index.html has inline code %q", m)
		}
	}
	sinks := regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\('on|\.style\b|localStorage|document\.cookie`)
	entries, err := fs.ReadDir(static, "static")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if path.Ext(e.Name()) != ".js" {
			continue
		}
		for i, line := range strings.Split(embedded(t, e.Name()), "\n") {
			code, _, _ := strings.Cut(line, "//")
			if m := sinks.FindString(code); m != "" {
				t.Errorf("%s:%d uses %s", e.Name(), i+1, m)
			}
		}
	}
}
