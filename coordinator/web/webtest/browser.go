package webtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The element ids the helper relies on; coordinator/web's page provides
// them. Keep them in step with static/index.html and static/views.js.
const (
	IDLoginForm    = "login-form"    // the login form
	IDToken        = "token"         // its token input
	IDLoginSubmit  = "login-submit"  // its submit button, enabled once app.js runs
	IDLoginError   = "login-error"   // why a login failed
	IDLoginMessage = "login-message" // why the session ended (logoff, idle, 401)
	IDUser         = "user"          // the logged-in header: person, role, log out
	IDPerson       = "whoami-person" // the person from whoami
	IDRole         = "whoami-role"   // the role from whoami
	IDLogout       = "logout"        // the log out button
	IDError        = "error"         // problem details of a failed API call
	IDNavJobs      = "nav-jobs"      // the navigation link to #/jobs
	IDJobsTable    = "jobs-table"    // the jobs list; its links are a.job-link[data-job-id]
	IDJobTitle     = "job-title"     // the job page's id, as text
	IDRoundChart   = "round-chart"   // the job page's SVG chart; one <circle> per committed round
	IDRoundsTable  = "rounds-table"  // the job page's rounds
)

// StepTimeout bounds each step of a Browser.
const StepTimeout = 10 * time.Second

// totalTimeout bounds a Browser's whole life, so that a hung browser
// cannot hold a test until the go test deadline.
const totalTimeout = 90 * time.Second

// ChromiumPath returns the Chromium to run: $COHORT_CHROMIUM, else
// chromium or chromium-browser on PATH. Without one the test is skipped,
// or fails when $CI is set (CI must run the browser tests).
func ChromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("COHORT_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const msg = "chromium is not installed (scripts/deps.sh installs it; or set COHORT_CHROMIUM)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// ScreenshotPath returns where a screenshot named name is saved: in
// $COHORT_ARTIFACTS when set (created if needed), else in t.TempDir().
func ScreenshotPath(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("COHORT_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil { // #nosec G301 G703 -- test artefacts directory (screenshots), meant to be read by CI and people
		t.Fatalf("artifacts directory: %v", err)
	}
	return filepath.Join(dir, name)
}

// Browser is one headless Chromium tab on the dashboard. It records
// JavaScript dialogs (alert, confirm, prompt: dismissed at once), uncaught
// exceptions, Content-Security-Policy violations and failed loads of
// anything but /v1 calls; Clean fails the test if there were any.
//
// Each method runs its actions with StepTimeout and fails the test (after
// saving a screenshot of the page) when they fail.
type Browser struct {
	t    testing.TB
	base string
	ctx  context.Context // the tab

	mu       sync.Mutex
	problems []string // guarded by mu

	wg sync.WaitGroup // dialog dismissals
}

// NewBrowser starts Chromium (ChromiumPath; headless, no sandbox when
// running as root, TLS errors ignored so that an httptest TLS server or a
// self-signed coordinator work) with one tab for baseURL, the origin
// serving /ui/ and /v1/. It is closed when the test ends.
func NewBrowser(t testing.TB, baseURL string) *Browser {
	t.Helper()
	execPath := ChromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(execPath),
		chromedp.IgnoreCertErrors,
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("lang", "en-US"),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	lifeCtx, lifeCancel := context.WithTimeout(context.Background(), totalTimeout)
	allocCtx, allocCancel := chromedp.NewExecAllocator(lifeCtx, opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	b := &Browser{t: t, base: strings.TrimRight(baseURL, "/"), ctx: ctx}
	t.Cleanup(func() {
		cancel()
		allocCancel()
		b.wg.Wait()
		lifeCancel()
	})

	// The first Do starts the browser and the tab, and binds the browser's
	// life to the context it gets: ctx, bounded by totalTimeout, not a
	// step's timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", execPath, err)
	}
	if err := chromedp.Listen(ctx, b.onEvent); err != nil {
		t.Fatalf("listening to the tab: %v", err)
	}
	return b
}

// onEvent runs in the tab's event loop: it records, and hands dialogs to
// a goroutine (no command may run here).
func (b *Browser) onEvent(ev any) {
	switch ev := ev.(type) {
	case *page.EventJavascriptDialogOpening:
		b.problem("JavaScript %s dialog opened: %q", ev.Type, ev.Message)
		b.wg.Go(func() {
			_, _ = chromedp.Call(b.ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		})
	case *runtime.EventExceptionThrown:
		text := ev.ExceptionDetails.Text
		if ex := ev.ExceptionDetails.Exception; ex != nil && ex.Description != "" {
			text += " " + ex.Description
		}
		b.problem("uncaught exception at %s:%d: %s", ev.ExceptionDetails.URL, ev.ExceptionDetails.LineNumber+1, text)
	case *log.EventEntryAdded:
		e := ev.Entry
		switch {
		case e.Source == log.EntrySourceSecurity || e.Source == log.EntrySourceViolation ||
			strings.Contains(e.Text, "Content Security Policy"):
			b.problem("%s: %s", e.Source, e.Text)
		case e.Source == log.EntrySourceNetwork && e.Level == log.EntryLevelError && !strings.Contains(e.URL, "/v1/"):
			// The API's 401s and 404s are expected; a failed load of
			// anything else (a module, or an <img src=x> that got in)
			// is not.
			b.problem("failed load %s: %s", e.URL, e.Text)
		}
	}
}

func (b *Browser) problem(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, fmt.Sprintf(format, args...))
}

// Problems returns what was recorded so far: dialogs, exceptions, CSP
// violations, failed loads.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.problems)
}

// Clean fails the test if any problem was recorded, or if the document
// holds an <img> or a <script> with no src (the page itself has neither;
// one would mean API text was parsed as markup).
func (b *Browser) Clean() {
	b.t.Helper()
	n := Eval[int](b, "count injected elements",
		`document.querySelectorAll('img, script:not([src]), [onerror], [onload]').length`)
	if n != 0 {
		b.fail("clean", fmt.Errorf("%d injected elements (img, inline script or event handler attributes) in the page", n))
	}
	if p := b.Problems(); len(p) > 0 {
		b.fail("clean", fmt.Errorf("the page had problems:\n  %s", strings.Join(p, "\n  ")))
	}
}

// Do runs actions as one step with StepTimeout; step names it in a
// failure.
func (b *Browser) Do(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(step, err)
	}
}

// Eval evaluates a JavaScript expression in the page and decodes its value.
func Eval[T any](b *Browser, step, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.fail(step, err)
	}
	return v
}

// WaitJS waits until the JavaScript expression is truthy.
func (b *Browser) WaitJS(step, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(StepTimeout)))
	if err != nil {
		b.fail(step, fmt.Errorf("waiting for %s: %w", expr, err))
	}
}

// Text returns the textContent of the element with the given id.
func (b *Browser) Text(id string) string {
	b.t.Helper()
	return Eval[string](b, "read #"+id, fmt.Sprintf(`(document.getElementById(%s) || {}).textContent || ''`, jsString(id)))
}

// fail saves a screenshot of the page, logs what the page shows as
// errors, and fails the test.
func (b *Browser) fail(step string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	if buf, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
		path := ScreenshotPath(b.t, "webtest-failure.png")
		if werr := os.WriteFile(path, buf, 0o644); werr == nil { // #nosec G306 -- test artefact (a screenshot of the test page)
			b.t.Logf("screenshot of the failure: %s", path)
		}
	}
	if shown, serr := chromedp.Run(ctx, chromedp.Evaluate[string](
		`['login-error','login-message','error'].map(id => { const e = document.getElementById(id); return e && !e.hidden ? id + ': ' + e.textContent : '' }).filter(Boolean).join('; ') + ' @ ' + location.href`)); serr == nil {
		b.t.Logf("the page shows: %s", shown)
	}
	if p := b.Problems(); len(p) > 0 {
		b.t.Logf("problems recorded: %s", strings.Join(p, "; "))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w (step timeout %v)", err, StepTimeout)
	}
	b.t.Fatalf("browser step %q: %v", step, err)
}

// jsString returns s as a JavaScript string literal.
func jsString(s string) string {
	buf, _ := json.Marshal(s) // escapes <, >, &, U+2028 and U+2029 too
	return string(buf)
}

// Open loads /ui/ and waits until the login form is ready (app.js ran).
func (b *Browser) Open() {
	b.t.Helper()
	b.Do("open /ui/",
		chromedp.Navigate(b.base+"/ui/"),
		chromedp.WaitVisible(chromedp.ID(IDLoginForm)),
		chromedp.WaitEnabled(chromedp.ID(IDLoginSubmit)),
	)
}

// submitToken types token into the login form and submits it.
func (b *Browser) submitToken(step, token string) {
	b.t.Helper()
	b.Do(step,
		chromedp.WaitVisible(chromedp.ID(IDLoginForm)),
		chromedp.WaitEnabled(chromedp.ID(IDLoginSubmit)),
		chromedp.Clear(chromedp.ID(IDToken)),
		chromedp.SendKeys(chromedp.ID(IDToken), token),
		chromedp.Click(chromedp.ID(IDLoginSubmit)),
	)
}

// LoginFails submits a token the API must refuse and returns the error
// the page shows; it fails the test if none is shown or the page logs in.
func (b *Browser) LoginFails(token string) string {
	b.t.Helper()
	b.submitToken("submit a wrong token", token)
	b.WaitJS("wait for the login error", `(() => { const e = document.getElementById('login-error'); return e && !e.hidden && e.textContent.trim() !== '' })()`)
	msg := b.Text(IDLoginError)
	if !Eval[bool](b, "still logged out", `document.getElementById('user').hidden && !document.getElementById('login').hidden`) {
		b.fail("wrong token", errors.New("the page logged in with a wrong token"))
	}
	return msg
}

// Login logs in with token and returns the person and role the page
// shows. It checks the token went to sessionStorage only: not to
// localStorage, not to a cookie.
func (b *Browser) Login(token string) (person, role string) {
	b.t.Helper()
	b.submitToken("submit the token", token)
	b.Do("wait for the dashboard",
		chromedp.WaitVisible(chromedp.ID(IDUser)),
		chromedp.WaitNotVisible(chromedp.ID(IDLoginForm)),
	)
	person, role = b.Text(IDPerson), b.Text(IDRole)
	if person == "" || role == "" {
		b.fail("login", fmt.Errorf("whoami not shown: person %q, role %q", person, role))
	}
	tok := jsString(token)
	where := Eval[string](b, "where the token is kept", fmt.Sprintf(`(() => {
		const t = %s, w = [];
		const inStore = (s) => { for (let i = 0; i < s.length; i++) { if ((s.getItem(s.key(i)) || '').includes(t)) return true } return false };
		if (inStore(sessionStorage)) w.push('sessionStorage');
		if (inStore(localStorage)) w.push('localStorage');
		if (document.cookie.includes(t)) w.push('cookie');
		if (location.href.includes(t)) w.push('url');
		if (document.getElementById('token').value !== '') w.push('input');
		return w.join(',');
	})()`, tok))
	if where != "sessionStorage" {
		b.fail("login", fmt.Errorf("the token is kept in %q; want sessionStorage only", where))
	}
	return person, role
}

// JobLink is a job as the jobs list shows it.
type JobLink struct {
	Text string `json:"text"` // the link's textContent
	ID   string `json:"id"`   // its data-job-id
}

// Jobs opens the jobs list from the navigation and returns its jobs. Every
// link's text must equal its job id: ids are shown as text, whatever they
// hold.
func (b *Browser) Jobs() []JobLink {
	b.t.Helper()
	b.Do("open the jobs list",
		chromedp.Click(chromedp.ID(IDNavJobs)),
		chromedp.WaitVisible(chromedp.ID(IDJobsTable)),
	)
	b.WaitJS("wait for the jobs route", `location.hash === '#/jobs' && document.getElementById('jobs-table') !== null`)
	links := Eval[[]JobLink](b, "read the jobs list", `Array.from(document.querySelectorAll('#jobs-table a.job-link')).map(a => ({text: a.textContent, id: a.dataset.jobId}))`)
	for _, l := range links {
		if l.Text != l.ID {
			b.fail("jobs list", fmt.Errorf("job link shows %q for job %q", l.Text, l.ID))
		}
	}
	return links
}

// OpenJob clicks the job's link in the jobs list (Jobs must have run) and
// waits for the job page to show that job.
func (b *Browser) OpenJob(id string) {
	b.t.Helper()
	link := fmt.Sprintf(`Array.from(document.querySelectorAll('#jobs-table a.job-link')).find(a => a.dataset.jobId === %s)`, jsString(id))
	b.Do("open job "+id, chromedp.Click(chromedp.JSPath(link)))
	b.WaitJS("wait for job page "+id, fmt.Sprintf(`(document.getElementById('job-title') || {}).textContent === %s`, jsString(id)))
}

// WaitChartPoints waits until #round-chart has want <circle> points.
func (b *Browser) WaitChartPoints(want int) {
	b.t.Helper()
	b.Do("wait for the chart", chromedp.WaitVisible(chromedp.ID(IDRoundChart)))
	b.WaitJS(fmt.Sprintf("wait for %d chart points", want),
		fmt.Sprintf(`document.querySelectorAll('#round-chart circle').length === %d`, want))
}

// Screenshot saves a full-page PNG to path and logs the path.
func (b *Browser) Screenshot(path string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, StepTimeout)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.fail("screenshot", err)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil { // #nosec G306 -- test artefact (a screenshot of the test page)
		b.t.Fatalf("saving the screenshot: %v", err)
	}
	b.t.Logf("screenshot: %s", path)
}

// RunLoginAndJobChart drives the dashboard at baseURL (an origin serving
// /ui/ and /v1/) in headless Chromium: it loads /ui/, checks that a wrong
// token is refused with a visible error, logs in with token, opens the
// jobs list, opens jobID, waits for its chart to have wantPoints points
// and its model registry wantPoints+1 versions (the initial model too),
// saves a full-page PNG to screenshot (ScreenshotPath(t,
// "dashboard-job-chart.png") when empty), and fails on any dialog, uncaught
// exception, CSP violation or markup injected from API text.
//
// Against a real coordinator the wrong-token attempt is one denied login
// in its audit log.
func RunLoginAndJobChart(t testing.TB, baseURL, token, jobID string, wantPoints int, screenshot string) {
	t.Helper()
	if screenshot == "" {
		screenshot = ScreenshotPath(t, "dashboard-job-chart.png")
	}
	b := NewBrowser(t, baseURL)
	b.Open()
	if msg := b.LoginFails("cohort-webtest-wrong-token"); msg == "" {
		t.Fatal("no error shown for a wrong token")
	} else {
		t.Logf("wrong token: %s", msg)
	}
	person, role := b.Login(token)
	t.Logf("logged in as %s (%s)", person, role)
	jobs := b.Jobs()
	if !slices.ContainsFunc(jobs, func(l JobLink) bool { return l.ID == jobID }) {
		t.Fatalf("job %q not in the jobs list (%d jobs)", jobID, len(jobs))
	}
	b.OpenJob(jobID)
	b.WaitChartPoints(wantPoints)
	// The job's model registry: a version per committed round, and the
	// initial model.
	b.WaitJS(fmt.Sprintf("wait for %d model versions", wantPoints+1),
		fmt.Sprintf(`document.querySelectorAll('#versions-table tbody tr').length === %d`, wantPoints+1))
	b.Screenshot(screenshot)
	b.Clean()
}
