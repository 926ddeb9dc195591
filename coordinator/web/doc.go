// Package web is the coordinator's dashboard: plain HTML, CSS and
// JavaScript modules embedded in the binary (no build step, no CDN, no
// libraries), served under /ui/ by [Handler] and [Mount].
//
// The page is a client of the admin API on the same origin. A person logs
// in with an admin bearer token, which the page checks with GET /v1/whoami
// and keeps in sessionStorage only (never a cookie, so cross-site requests
// carry no credential and CSRF does not apply); every API call sends it as
// "Authorization: Bearer". The page logs off by itself after 15 minutes
// without keyboard, pointer or touch activity, when the token expires, and
// at once on any 401 from the API. It shows the cluster's nodes and leader,
// the sites, the jobs, one job's rounds with an SVG chart of the mean
// validation AUROC per committed round, and the tail of the audit log,
// polling every 10 seconds while the tab is visible.
//
// Everything the API returns reaches the page through textContent and
// createElement, never as markup, and a strict Content-Security-Policy
// (no inline script or style) backs that up. Errors from the API are RFC
// 9457 problem details; the page shows their detail.
//
// The files, in static/:
//
//   - index.html: the shell (login form, header, navigation, view)
//   - app.js: login, logoff, routing and polling
//   - api.js: fetch with the token, problem details, pagination
//   - session.js: the token in sessionStorage and the idle timer
//   - views.js: one renderer per route
//   - chart.js: the SVG line chart of a job's metric per round
//   - dom.js: element construction and formatting helpers
//   - style.css, favicon.svg
//
// Package webtest drives the dashboard in a headless Chromium; its
// RunLoginAndJobChart runs against any server that mounts this package.
package web
