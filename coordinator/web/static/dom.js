// Element construction and formatting. Nothing here parses markup: text
// from the API becomes text nodes, so a job named "<img onerror=...>" is
// shown as those characters.

const SVG_NS = 'http://www.w3.org/2000/svg';

// append adds children to parent: strings and numbers as text nodes,
// nodes as they are; null, undefined and false are skipped.
function append(parent, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    parent.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return parent;
}

// setAttrs sets attributes; "class" and "data-*" included. Values are
// strings, never parsed.
function setAttrs(node, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    node.setAttribute(k, v === true ? '' : String(v));
  }
  return node;
}

// el makes an HTML element: el('td', {class: 'num'}, 'text', child, ...).
export function el(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

// svg makes an SVG element with the given attributes and children.
export function svg(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

// table makes a table with a header row and one row per item; cells(item)
// returns the row's cells as strings, nodes, or [content, attrs] pairs.
export function table(id, headers, items, cells, rowAttrs) {
  const head = el('tr', null, headers.map((h) => el('th', {scope: 'col'}, h)));
  const rows = items.map((item) => el('tr', rowAttrs ? rowAttrs(item) : null,
    cells(item).map((c) => Array.isArray(c) ? el('td', c[1], c[0]) : el('td', null, c))));
  return el('table', {id, class: 'data'}, el('thead', null, head), el('tbody', null, rows));
}

// parseTime returns the Date of an RFC 3339 string, or null when the
// value is absent or not a time.
export function parseTime(s) {
  if (typeof s !== 'string' || s === '') return null;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

const pad = (n) => String(n).padStart(2, '0');

// fmtTime formats an RFC 3339 time as "2026-01-02 15:04:05 UTC"; absent
// or malformed times show as a dash.
export function fmtTime(s) {
  const d = parseTime(s);
  if (!d) return '—';
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`;
}

// fmtAgo formats the distance from now to an RFC 3339 time: "3 min ago",
// "in 2 d". Absent times show as a dash.
export function fmtAgo(s, now) {
  const d = parseTime(s);
  if (!d) return '—';
  const secs = Math.round((now - d.getTime()) / 1000);
  const abs = Math.abs(secs);
  let text;
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.floor(abs / 60)} min`;
  else if (abs < 86400) text = `${Math.floor(abs / 3600)} h`;
  else text = `${Math.floor(abs / 86400)} d`;
  return secs >= 0 ? `${text} ago` : `in ${text}`;
}

// fmtMetric formats a metric with three decimals; absent values show as a
// dash.
export function fmtMetric(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v.toFixed(3) : '—';
}

// str turns an API value into display text: absent values show as a dash.
export function str(v) {
  if (v === null || v === undefined || v === '') return '—';
  return String(v);
}

// yesNo shows a boolean as a badge.
export function yesNo(v, yesClass, noClass) {
  return v ? el('span', {class: `badge ${yesClass || 'ok'}`}, 'yes')
    : el('span', {class: `badge ${noClass || 'muted'}`}, 'no');
}
