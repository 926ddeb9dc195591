package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Prefix is the path under which Handler serves the dashboard.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every response of the dashboard. It
// allows scripts, styles, images and connections from the serving origin
// only, and no inline script or style: everything the API returns is put
// into the page as text, and this policy is the second line of defence if
// that ever fails.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; " +
	"base-uri 'none'; form-action 'self'"

//go:embed static
var static embed.FS

// contentTypes maps the extensions of the embedded files to their media
// types, so that the answer does not depend on the host's mime tables.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// asset is one embedded file, read once when the handler is built.
type asset struct {
	body        []byte
	contentType string
	etag        string
	html        bool
}

// handler serves the embedded assets under Prefix.
type handler struct {
	assets map[string]*asset // by path below Prefix; "" is index.html
}

// Handler returns the dashboard: the embedded HTML, CSS and JavaScript
// under /ui/ (GET /ui/ is the page itself). Requests outside /ui/, for
// directories and for files that do not exist get 404; methods other than
// GET and HEAD get 405. Every response carries the security headers
// (Content-Security-Policy, X-Content-Type-Options, Referrer-Policy, ...).
//
// The files need no authentication: the page asks for an admin token and
// sends it to the /v1 API of the same origin, which checks it.
func Handler() http.Handler {
	h := &handler{assets: make(map[string]*asset)}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("web: embedded static directory missing: " + err.Error())
	}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			ct = "application/octet-stream"
		}
		body, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		h.assets[p] = &asset{
			body:        body,
			contentType: ct,
			etag:        `"` + hex.EncodeToString(sum[:12]) + `"`,
			html:        path.Ext(p) == ".html",
		}
		return nil
	})
	if err != nil {
		panic("web: reading embedded files: " + err.Error())
	}
	h.assets[""] = h.assets["index.html"]
	return h
}

// Mount registers the dashboard on mux: Handler under /ui/ (the mux
// redirects /ui to /ui/) and a redirect from exactly / to /ui/. Other paths
// of mux are left alone.
func Mount(mux *http.ServeMux) {
	mux.Handle(Prefix, Handler())
	mux.Handle("GET /{$}", withSecurityHeaders(http.RedirectHandler(Prefix, http.StatusFound)))
}

func (h *handler) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	setSecurityHeaders(w.Header())
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name, ok := strings.CutPrefix(req.URL.Path, Prefix)
	if !ok {
		http.NotFound(w, req)
		return
	}
	a := h.assets[name]
	if a == nil {
		// Directories (and anything not embedded) are not found: no
		// listing, and no redirect that would reveal the layout.
		http.NotFound(w, req)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("ETag", a.etag)
	if a.html {
		hd.Set("Cache-Control", "no-store")
	} else {
		// Revalidate every time: a new build must never run against old
		// scripts, and the ETag makes revalidation cheap.
		hd.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, req, name, time.Time{}, bytes.NewReader(a.body))
}

// setSecurityHeaders sets the headers every dashboard response carries.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

func withSecurityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		setSecurityHeaders(w.Header())
		next.ServeHTTP(w, req)
	})
}
