// One renderer per route. Each fetches what it shows and returns a DOM
// node; all API text goes in through dom.js, as text.

import {el, table, fmtTime, fmtAgo, fmtMetric, str, yesNo, parseTime} from './dom.js';
import {chartPoints, renderChart} from './chart.js';

// AUDIT_TAIL is how many of the latest audit entries are shown.
export const AUDIT_TAIL = 50;

const arr = (v) => (Array.isArray(v) ? v : []);

function heading(text, ...rest) {
  return el('div', {class: 'view-head'}, el('h2', {id: 'view-title'}, text), ...rest);
}

function summary(id, pairs) {
  return el('dl', {id, class: 'summary'},
    pairs.map(([k, v]) => [el('dt', null, k), el('dd', null, v)]));
}

// timeCell is a table cell with a time that does not wrap.
function timeCell(s) {
  return [fmtTime(s), {class: 'time'}];
}

function badge(text, cls) {
  return el('span', {class: `badge ${cls}`}, str(text));
}

// cluster: the nodes, which one leads, and whether the cluster has a
// leader at all.
export async function clusterView(api) {
  const c = await api.get('/v1/cluster');
  const nodes = arr(c.nodes);
  const leader = typeof c.leader === 'string' ? c.leader : '';
  const voters = nodes.filter((n) => n && n.voter).length;
  const health = leader
    ? el('p', {id: 'cluster-health', class: 'banner ok'}, 'Healthy: ', el('strong', {id: 'cluster-leader'}, leader), ' leads')
    : el('p', {id: 'cluster-health', class: 'banner error'}, 'No leader: the cluster cannot commit changes.');
  return el('section', {id: 'cluster-view'},
    heading('Cluster'),
    health,
    summary('cluster-summary', [
      ['Answered by', str(c.node)],
      ['Leader', leader || '—'],
      ['Nodes', `${nodes.length} (${voters} voting)`],
    ]),
    table('cluster-table',
      ['Node', 'Role', 'Voter', 'Raft address', 'Agent address', 'Admin address'],
      nodes,
      (n) => [
        str(n.id),
        n.leader || (leader && n.id === leader) ? badge('leader', 'ok') : badge(n.voter ? 'follower' : 'non-voter', 'muted'),
        yesNo(n.voter),
        str(n.raft_addr), str(n.agent_addr), str(n.admin_addr),
      ],
      (n) => ({'data-node-id': str(n.id), 'class': n.id === leader ? 'leader' : null})));
}

// certCell shows a certificate expiry, warning within a day and marking
// an expired one.
function certCell(s, now) {
  const d = parseTime(s);
  if (!d) return '—';
  const left = d.getTime() - now;
  const cls = left <= 0 ? 'expired' : left < 24 * 3600 * 1000 ? 'soon' : '';
  return [el('span', {class: cls || null}, fmtTime(s), el('br'), el('small', null, left <= 0 ? 'expired' : fmtAgo(s, now))), null];
}

// sites: every enrolled site, online or not, with its certificate.
export async function sitesView(api, _params, now) {
  const {items, truncated} = await api.list('/v1/sites', 'sites');
  const sites = items.filter((s) => s && typeof s === 'object');
  const online = sites.filter((s) => s.online && !s.revoked).length;
  const revoked = sites.filter((s) => s.revoked).length;
  return el('section', {id: 'sites-view'},
    heading('Sites'),
    el('p', {id: 'sites-count'}, `${sites.length} sites, ${online} online, ${revoked} revoked`,
      truncated ? ' (list truncated)' : ''),
    table('sites-table',
      ['Site', 'Online', 'Last seen', 'Certificate expires', 'Revoked', 'Created'],
      sites,
      (s) => [
        [str(s.id), {class: 'site-id'}],
        s.online ? badge('online', 'ok') : badge('offline', 'muted'),
        s.last_seen ? [el('span', null, fmtAgo(s.last_seen, now)), {title: fmtTime(s.last_seen)}] : '—',
        certCell(s.cert_expires, now),
        s.revoked ? badge('revoked', 'error') : 'no',
        timeCell(s.created),
      ],
      (s) => ({'data-site-id': str(s.id), 'class': s.revoked ? 'revoked' : null})));
}

function stateBadge(state) {
  const cls = {running: 'ok', done: 'ok', committed: 'ok', paused: 'warn', open: 'warn',
    failed: 'error', cancelled: 'muted'}[state] || 'muted';
  return badge(state, cls);
}

function roundsCell(j) {
  const c = typeof j.committed_rounds === 'number' ? j.committed_rounds : 0;
  const n = typeof j.rounds === 'number' ? j.rounds : '?';
  return `${c} / ${n}`;
}

// jobHref is the route of a job; the id is encoded, never trusted.
export function jobHref(id) {
  return `#/jobs/${encodeURIComponent(String(id))}`;
}

// jobs: every job with its state and progress.
export async function jobsView(api) {
  const {items, truncated} = await api.list('/v1/jobs', 'jobs');
  const jobs = items.filter((j) => j && typeof j === 'object');
  return el('section', {id: 'jobs-view'},
    heading('Jobs'),
    el('p', {id: 'jobs-count'}, `${jobs.length} jobs`, truncated ? ' (list truncated)' : ''),
    table('jobs-table',
      ['Job', 'State', 'Rounds committed / total', 'Created', 'Finished', 'Failure'],
      jobs,
      (j) => [
        el('a', {'class': 'job-link', 'href': jobHref(j.id), 'data-job-id': str(j.id)}, str(j.id)),
        stateBadge(j.state),
        [roundsCell(j), {class: 'num'}],
        timeCell(j.created),
        timeCell(j.finished),
        str(j.fail_reason),
      ],
      (j) => ({'data-job-id': str(j.id)})));
}

function stageBadge(stage) {
  const cls = {production: 'ok', staging: 'warn'}[stage] || 'muted';
  return badge(stage, cls);
}

// versionsTable: a job's model registry, newest first.
function versionsTable(versions, truncated) {
  return [
    el('p', {id: 'versions-count'}, `${versions.length} ${versions.length === 1 ? 'version' : 'versions'}`,
      truncated ? ' (list truncated)' : ''),
    table('versions-table',
      ['Version', 'Round', 'Stage', 'Rule', 'Sites', 'Samples', 'Mean val AUROC', 'ε spent', 'Secure aggregation', 'Committed'],
      versions,
      (v) => [
        typeof v.digest === 'string' && v.digest ? [el('code', {title: v.digest}, v.digest.slice(0, 12)), null] : '—',
        [str(v.round), {class: 'num'}],
        stageBadge(v.stage),
        str(v.strategy),
        [String(arr(v.contributors).length), {class: 'num', title: arr(v.contributors).map(String).join(', ')}],
        [str(v.samples), {class: 'num'}],
        [fmtMetric(v.mean_val_auroc), {class: 'num'}],
        [typeof v.epsilon_spent === 'number' ? v.epsilon_spent.toFixed(2) : '—', {class: 'num'}],
        v.secure_aggregation ? 'yes' : 'no',
        timeCell(v.committed),
      ],
      (v) => ({'data-digest': str(v.digest), 'data-stage': str(v.stage)})),
  ];
}

// job: one job, its chart, its model versions and its rounds.
export async function jobView(api, params) {
  const id = params.id;
  const j = await api.get(`/v1/jobs/${encodeURIComponent(id)}`);
  // The registry is read apart: a job view without it still helps.
  let registry;
  try {
    const {items, truncated} = await api.list(`/v1/jobs/${encodeURIComponent(id)}/models`, 'models');
    const versions = items.filter((v) => v && typeof v === 'object')
      .slice().sort((a, b) => (b.round || 0) - (a.round || 0));
    registry = versionsTable(versions, truncated);
  } catch (e) {
    registry = el('p', {id: 'versions-error', class: 'banner error'},
      'The model registry could not be read: ', e && e.detail ? e.detail : String(e));
  }
  const history = arr(j.history).filter((h) => h && typeof h === 'object')
    .slice().sort((a, b) => (a.round - b.round) || ((a.attempt || 0) - (b.attempt || 0)));
  const metric = 'Mean validation AUROC';
  const points = chartPoints(history);
  return el('section', {id: 'job-view'},
    heading(el('span', null, 'Job ', el('span', {id: 'job-title'}, str(j.id)))),
    el('p', null, el('a', {href: '#/jobs'}, '← all jobs')),
    summary('job-summary', [
      ['State', stateBadge(j.state)],
      ['Rounds committed / total', roundsCell(j)],
      ['Created', fmtTime(j.created)],
      ['Finished', fmtTime(j.finished)],
      ['Failure', str(j.fail_reason)],
      ['Stopped', str(j.stop_reason)],
      ['Privacy (ε spent / budget)', j.privacy ? el('span', {id: 'job-epsilon'},
        Number(j.privacy.epsilon_spent).toFixed(2) + ' / ' + String(j.privacy.epsilon_budget) + ' at δ=' + String(j.privacy.delta)) : str(undefined)],
    ]),
    el('figure', {class: 'chart-box'},
      renderChart(points, metric),
      el('figcaption', null, `${metric} of each committed round (${points.length} ${points.length === 1 ? 'point' : 'points'}).`)),
    el('h3', null, 'Model versions'),
    registry,
    el('h3', null, 'Rounds'),
    table('rounds-table',
      ['Round', 'Kind', 'Attempt', 'State', 'Contributors', 'Samples', 'AUROC', 'Model', 'Failure'],
      history,
      (h) => [
        [str(h.round), {class: 'num'}],
        str(h.kind),
        [str(h.attempt), {class: 'num'}],
        stateBadge(h.state),
        arr(h.contributors).map(String).join(', ') || '—',
        [str(h.samples), {class: 'num'}],
        [fmtMetric(h.mean_val_auroc), {class: 'num'}],
        typeof h.model === 'string' && h.model ? [el('code', {title: h.model}, h.model.slice(0, 12)), null] : '—',
        str(h.fail_reason),
      ],
      (h) => ({'data-round': str(h.round), 'class': `round-${typeof h.state === 'string' ? h.state.replace(/[^a-z]/g, '') : 'unknown'}`})));
}

// audit: the latest AUDIT_TAIL entries, newest first. The size comes
// first (limit=0), then the tail.
export async function auditView(api) {
  const head = await api.get('/v1/audit/entries?limit=0');
  const size = typeof head.size === 'number' && head.size > 0 ? Math.floor(head.size) : 0;
  let entries = [];
  if (size > 0) {
    const start = Math.max(0, size - AUDIT_TAIL);
    const body = await api.get(`/v1/audit/entries?start=${start}&limit=${AUDIT_TAIL}`);
    entries = arr(body.entries).filter((e) => e && typeof e === 'object');
  }
  entries.sort((a, b) => (b.index || 0) - (a.index || 0));
  return el('section', {id: 'audit-view'},
    heading('Audit log'),
    el('p', {id: 'audit-count'}, `${size} entries in the log; the latest ${entries.length} are shown, newest first.`),
    table('audit-table',
      ['#', 'Time', 'Actor', 'Role', 'Action', 'Target', 'Outcome', 'Status'],
      entries,
      (e) => [
        [str(e.index), {class: 'num'}],
        timeCell(e.time),
        str(e.actor),
        e.break_glass ? [el('span', null, str(e.role), ' ', badge('break-glass', 'error')), null] : str(e.role),
        str(e.action),
        str(e.target),
        badge(e.outcome, e.outcome === 'ok' ? 'ok' : e.outcome === 'denied' ? 'warn' : 'error'),
        [typeof e.status === 'number' && e.status > 0 ? String(e.status) : '—', {class: 'num'}],
      ],
      (e) => ({'data-index': str(e.index), 'class': e.break_glass ? 'break-glass' : null})));
}
