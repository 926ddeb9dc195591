package web_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cohort-fl/cohort/coordinator/web/webtest"
)

// The browser test: log in, open a job, find its chart, save a
// screenshot. The same helper runs against a real coordinator.
func TestBrowserLoginAndJobChart(t *testing.T) {
	api := webtest.NewFakeAPI(webtest.FixtureToken, time.Now())
	srv := webtest.NewServer(t, api)
	webtest.RunLoginAndJobChart(t, srv.URL, webtest.FixtureToken, webtest.ChartJobID, webtest.ChartJobPoints,
		webtest.ScreenshotPath(t, "dashboard-job-chart.png"))
}

// Every view, API text with markup in it, problem details, and the three
// ways a session ends: idle, a 401, and the log out button. One browser
// session runs the steps in order (no subtests: the Browser reports
// failures on this test's t).
func TestBrowserViewsAndLogoff(t *testing.T) {
	api := webtest.NewFakeAPI(webtest.FixtureToken, time.Now())
	srv := webtest.NewServer(t, api)
	b := webtest.NewBrowser(t, srv.URL)
	b.Open()
	if person, role := b.Login(webtest.FixtureToken); person != "alice" || role != "admin" {
		t.Fatalf("whoami shown as %q %q", person, role)
	}

	// cluster
	{
		b.WaitJS("cluster view", `location.hash === '#/cluster' && document.getElementById('cluster-table') !== null`)
		if got := b.Text("cluster-leader"); got != "c2" {
			t.Errorf("leader %q, want c2", got)
		}
		if n := webtest.Eval[int](b, "nodes", `document.querySelectorAll('#cluster-table tbody tr').length`); n != 3 {
			t.Errorf("%d node rows, want 3", n)
		}
	}

	// sites
	{
		b.Do("open sites", chromedp.Click(chromedp.ID("nav-sites")), chromedp.WaitVisible(chromedp.ID("sites-table")))
		ids := webtest.Eval[[]string](b, "site ids", `Array.from(document.querySelectorAll('#sites-table td.site-id')).map(td => td.textContent)`)
		want := []string{"st-mary", "st-luke", "st-old", "st-new", webtest.XSSSiteID}
		if !slices.Equal(ids, want) {
			t.Errorf("sites %q, want %q (all pages, in order, as text)", ids, want)
		}
		if got := b.Text("sites-count"); got != "5 sites, 2 online, 1 revoked" {
			t.Errorf("sites summary %q", got)
		}
		row := webtest.Eval[string](b, "never seen site",
			`document.querySelector('#sites-table tr[data-site-id="st-new"]').textContent`)
		if !strings.Contains(row, "—") {
			t.Errorf("a site with no last_seen or cert_expires shows %q, want dashes", row)
		}
	}

	// jobs
	{
		jobs := b.Jobs()
		var ids []string
		for _, j := range jobs {
			ids = append(ids, j.Text)
		}
		want := []string{webtest.ChartJobID, webtest.XSSJobID, "j-stats", "j-paused", "j-cancelled"}
		if !slices.Equal(ids, want) {
			t.Errorf("jobs %q, want %q", ids, want)
		}
		rounds := webtest.Eval[string](b, "rounds column",
			`document.querySelector('#jobs-table tbody tr:first-child td:nth-child(3)').textContent`)
		if rounds != "5 / 8" {
			t.Errorf("rounds of %s shown as %q, want 5 / 8", webtest.ChartJobID, rounds)
		}
	}

	// xss job
	{
		b.OpenJob(webtest.XSSJobID)
		b.WaitChartPoints(1)
		if got := b.Text("job-title"); got != webtest.XSSJobID {
			t.Errorf("job title %q, want the id as text", got)
		}
		summary := b.Text("job-summary")
		if !strings.Contains(summary, "<b>quorum</b> lost") {
			t.Errorf("fail_reason not shown as text: %q", summary)
		}
		if n := webtest.Eval[int](b, "markup", `document.querySelectorAll('#view b, #view img, #view script').length`); n != 0 {
			t.Errorf("%d elements parsed from API text", n)
		}
		if rule := webtest.Eval[string](b, "version rule", `document.querySelector('#versions-table tbody td:nth-child(4)').textContent`); rule != "<img src=y onerror=alert(2)>" {
			t.Errorf("a version's rule shown as %q, want the text", rule)
		}
		b.Clean()
	}

	// chart
	{
		b.Do("back to jobs", chromedp.Navigate(srv.URL+"/ui/#/jobs"), chromedp.WaitVisible(chromedp.ID("jobs-table")))
		b.OpenJob(webtest.ChartJobID)
		b.WaitChartPoints(webtest.ChartJobPoints)
		rounds := webtest.Eval[[]string](b, "chart rounds",
			`Array.from(document.querySelectorAll('#round-chart circle')).map(c => c.dataset.round + ':' + c.dataset.value)`)
		want := []string{"1:0.62", "2:0.68", "3:0.71", "4:0.75", "5:0.78"}
		if !slices.Equal(rounds, want) {
			t.Errorf("chart points %q, want %q", rounds, want)
		}
		// Higher AUROC is drawn higher: cy falls as the metric rises.
		cys := webtest.Eval[[]float64](b, "chart y", `Array.from(document.querySelectorAll('#round-chart circle')).map(c => Number(c.getAttribute('cy')))`)
		for i := 1; i < len(cys); i++ {
			if cys[i] >= cys[i-1] {
				t.Errorf("point %d at y=%v is not above point %d at y=%v", i+1, cys[i], i, cys[i-1])
			}
		}
		labels := b.Text("round-chart")
		for _, l := range []string{"Round", "Mean validation AUROC"} {
			if !strings.Contains(labels, l) {
				t.Errorf("chart has no axis label %q", l)
			}
		}
		if n := webtest.Eval[int](b, "round rows", `document.querySelectorAll('#rounds-table tbody tr').length`); n != 7 {
			t.Errorf("%d rows in the rounds table, want 7 (5 committed, 1 failed attempt, 1 open)", n)
		}
		// The registry, newest first, across pages, with each stage.
		stages := webtest.Eval[[]string](b, "versions", `Array.from(document.querySelectorAll('#versions-table tbody tr')).map(r => r.children[1].textContent + ':' + r.dataset.stage)`)
		if want := []string{"5:staging", "4:production", "3:candidate", "2:candidate", "1:candidate", "0:candidate"}; !slices.Equal(stages, want) {
			t.Errorf("versions %q, want %q", stages, want)
		}
		if got := b.Text("versions-count"); got != "6 versions" {
			t.Errorf("versions summary %q", got)
		}
	}

	// audit
	{
		b.Do("open audit", chromedp.Click(chromedp.ID("nav-audit")), chromedp.WaitVisible(chromedp.ID("audit-table")))
		idx := webtest.Eval[[]string](b, "audit rows", `Array.from(document.querySelectorAll('#audit-table tbody tr')).map(r => r.dataset.index)`)
		if len(idx) != 50 || idx[0] != fmt.Sprint(webtest.FixtureAuditSize-1) || idx[49] != fmt.Sprint(webtest.FixtureAuditSize-50) {
			t.Errorf("audit rows %v, want the latest 50, newest first", idx)
		}
		if n := webtest.Eval[int](b, "break-glass rows", `document.querySelectorAll('#audit-table tr.break-glass').length`); n != 1 {
			t.Errorf("%d break-glass rows, want 1", n)
		}
	}

	// problem detail
	{
		b.Do("open a missing job", chromedp.Navigate(srv.URL+"/ui/#/jobs/nope"))
		b.WaitJS("problem shown", `!document.getElementById('error').hidden`)
		if got := b.Text("error"); got != `no job "nope"` {
			t.Errorf("error shows %q, want the problem's detail", got)
		}
	}

	// reload keeps the session
	{
		b.Do("reload", chromedp.Navigate(srv.URL+"/ui/#/cluster"), chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("cluster-table")))
	}

	// idle logoff
	{
		// The idle clock lives in sessionStorage; set the last activity 16
		// minutes back instead of waiting.
		b.Do("age the session", chromedp.Evaluate[chromedp.Void](
			`sessionStorage.setItem('cohort.lastActivity', String(Date.now() - 16 * 60 * 1000))`))
		b.WaitJS("idle logoff", `!document.getElementById('login').hidden`)
		if got := b.Text("login-message"); !strings.Contains(got, "15 minutes without activity") {
			t.Errorf("logoff message %q", got)
		}
		if n := webtest.Eval[int](b, "storage after logoff", `sessionStorage.length + document.getElementById('view').childNodes.length`); n != 0 {
			t.Errorf("token or data left after logoff (%d)", n)
		}
	}

	// 401 logoff
	{
		b.Login(webtest.FixtureToken)
		api.Revoke()
		b.Do("open sites with a revoked token", chromedp.Click(chromedp.ID("nav-sites")))
		b.WaitJS("logoff on 401", `!document.getElementById('login').hidden`)
		if got := b.Text("login-message"); !strings.Contains(got, "refused the token") {
			t.Errorf("logoff message %q", got)
		}
		api.Restore()
	}

	// log out button
	{
		b.Login(webtest.FixtureToken)
		b.Do("log out", chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("login-form")))
		if got := b.Text("login-message"); got != "You have logged out." {
			t.Errorf("logout message %q", got)
		}
		if n := webtest.Eval[int](b, "storage after logout", `sessionStorage.length`); n != 0 {
			t.Errorf("sessionStorage keeps %d items after logout", n)
		}
	}

	b.Clean()
}
