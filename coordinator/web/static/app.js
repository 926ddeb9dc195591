// The dashboard: login and logoff, hash routing, polling.

import {Session} from './session.js';
import {API} from './api.js';
import {el, fmtTime, parseTime, str} from './dom.js';
import {auditView, clusterView, jobView, jobsView, sitesView} from './views.js';

// POLL_MS is how often the current view is refreshed while the tab is
// visible.
const POLL_MS = 10 * 1000;

// IDLE_CHECK_MS is how often the idle and expiry clocks are checked.
const IDLE_CHECK_MS = 1000;

const $ = (id) => document.getElementById(id);

const session = new Session(window.sessionStorage, () => Date.now());
const api = new API(session, (detail) =>
  logout(`Logged off: the API refused the token (${detail}).`));

let pollTimer = 0;
let generation = 0; // bumped on every render and on logout; stale results are dropped

// route parses location.hash: #/cluster, #/sites, #/jobs, #/jobs/<id>,
// #/audit. An empty hash is the cluster view.
function route() {
  const h = location.hash.replace(/^#\/?/, '');
  const slash = h.indexOf('/');
  const head = slash < 0 ? h : h.slice(0, slash);
  const rest = slash < 0 ? '' : h.slice(slash + 1);
  switch (head) {
    case '':
    case 'cluster': return rest ? null : {nav: 'cluster', title: 'Cluster', view: clusterView};
    case 'sites': return rest ? null : {nav: 'sites', title: 'Sites', view: sitesView};
    case 'audit': return rest ? null : {nav: 'audit', title: 'Audit', view: auditView};
    case 'jobs': {
      if (!rest) return {nav: 'jobs', title: 'Jobs', view: jobsView};
      let id;
      try {
        id = decodeURIComponent(rest);
      } catch {
        return null;
      }
      if (id === '.' || id === '..') return null; // a URL cannot address these
      return {nav: 'jobs', title: `Job ${id}`, view: jobView, params: {id}};
    }
    default: return null;
  }
}

function showError(text) {
  const e = $('error');
  e.textContent = text;
  e.hidden = false;
}

function hideError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

// render shows the current route. reason is 'route' for a new route (the
// old view is cleared first) or 'poll' for a refresh (the old view stays
// until the new one is ready, and stays with an error banner if the
// refresh fails).
async function render(reason) {
  if (session.token() === null) return;
  const r = route();
  const gen = ++generation;
  for (const a of $('nav').querySelectorAll('a')) {
    if (r && a.id === `nav-${r.nav}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!r) {
    hideError();
    $('view').replaceChildren(el('p', {id: 'not-found'}, 'No such page.'));
    document.title = 'Cohort — not found';
    return;
  }
  document.title = `Cohort — ${r.title}`;
  if (reason === 'route') {
    hideError();
    $('view').replaceChildren(el('p', {class: 'loading'}, 'Loading…'));
  }
  try {
    const node = await r.view(api, r.params || {}, Date.now());
    if (gen !== generation || session.token() === null) return;
    $('view').replaceChildren(node);
    hideError();
    $('status').textContent = `Updated ${fmtTime(new Date().toISOString())}; refreshed every ${POLL_MS / 1000} s while this tab is visible.`;
  } catch (e) {
    if (gen !== generation || session.token() === null) return;
    if (reason === 'route') {
      $('view').replaceChildren();
      $('status').textContent = '';
    }
    showError(e && e.detail ? e.detail : String(e));
  }
}

function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(async () => {
    if (session.token() === null) return;
    if (document.visibilityState === 'visible') await render('poll');
    if (session.token() !== null) schedulePoll();
  }, POLL_MS);
}

function showLogin(message) {
  $('app').hidden = true;
  $('nav').hidden = true;
  $('user').hidden = true;
  $('login').hidden = false;
  const m = $('login-message');
  m.textContent = message || '';
  m.hidden = !message;
  document.title = 'Cohort — sign in';
  $('token').focus();
}

// logout forgets the token and everything shown, and returns to the login
// form with message (why the session ended).
function logout(message) {
  session.end();
  generation++;
  clearTimeout(pollTimer);
  $('view').replaceChildren();
  $('status').textContent = '';
  $('whoami-person').textContent = '';
  $('whoami-role').textContent = '';
  hideError();
  $('login-error').hidden = true;
  showLogin(message);
}

// enter shows the dashboard for the person whoami described.
function enter(who) {
  const exp = parseTime(who && who.expires);
  session.expires = exp ? exp.getTime() : null;
  $('whoami-person').textContent = str(who && who.person);
  const role = str(who && who.role);
  $('whoami-role').textContent = role;
  $('whoami-role').className = `role role-${role.replace(/[^a-z-]/g, '')}`;
  $('break-glass').hidden = role !== 'break-glass';
  $('login').hidden = true;
  $('login-error').hidden = true;
  $('login-message').hidden = true;
  $('nav').hidden = false;
  $('user').hidden = false;
  $('app').hidden = false;
  if (location.hash === '' || location.hash === '#' || location.hash === '#/') {
    location.replace('#/cluster'); // fires hashchange, which renders
  } else {
    render('route');
  }
  schedulePoll();
}

async function onLogin(ev) {
  ev.preventDefault();
  const input = $('token');
  const token = input.value.trim();
  const err = $('login-error');
  err.hidden = true;
  if (token === '') {
    err.textContent = 'Enter a token.';
    err.hidden = false;
    return;
  }
  if (!/^[\x21-\x7e]+$/.test(token)) {
    err.textContent = 'That is not a token: tokens are printable ASCII without spaces.';
    err.hidden = false;
    return;
  }
  $('login-submit').disabled = true;
  try {
    const who = await api.get('/v1/whoami', token);
    input.value = '';
    session.begin(token);
    enter(who);
  } catch (e) {
    err.textContent = e.status === 401 ? `Login failed: ${e.detail}` : e.detail || String(e);
    err.hidden = false;
    input.select();
  } finally {
    $('login-submit').disabled = false;
  }
}

function checkIdle() {
  switch (session.expiredReason()) {
    case 'idle':
      logout('Logged off after 15 minutes without activity.');
      break;
    case 'expired':
      logout('Logged off: the token expired.');
      break;
  }
}

function start() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', () => logout('You have logged out.'));
  for (const type of ['keydown', 'pointerdown', 'pointermove', 'wheel', 'touchstart']) {
    window.addEventListener(type, () => session.touch(), {capture: true, passive: true});
  }
  window.addEventListener('hashchange', () => render('route'));
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && session.token() !== null) {
      checkIdle();
      render('poll');
      schedulePoll();
    }
  });
  setInterval(checkIdle, IDLE_CHECK_MS);

  $('login-submit').disabled = false;

  if (session.expiredReason() !== '') {
    checkIdle(); // a reload after the session ended: say why
    return;
  }
  if (session.token() === null) {
    showLogin('');
    return;
  }
  // A reload: check the stored token again.
  api.get('/v1/whoami').then(enter, (e) => {
    if (session.token() !== null) logout(`Logged off: ${e.detail || e}`);
  });
}

start();
