// The SVG line chart of a job's metric per committed round, drawn with DOM
// calls (no library, no markup strings).

import {svg} from './dom.js';

const W = 640;
const H = 300;
const M = {top: 16, right: 24, bottom: 48, left: 64};

// chartPoints picks the points of a job's history: one per committed round
// whose mean_val_auroc is a number, by round number. A round that failed
// and was retried has one committed attempt at most.
export function chartPoints(history) {
  const byRound = new Map();
  for (const h of Array.isArray(history) ? history : []) {
    if (!h || h.state !== 'committed') continue;
    if (typeof h.round !== 'number' || typeof h.mean_val_auroc !== 'number') continue;
    if (!Number.isFinite(h.mean_val_auroc)) continue;
    byRound.set(h.round, h.mean_val_auroc);
  }
  return [...byRound.entries()].sort((a, b) => a[0] - b[0])
    .map(([round, value]) => ({round, value}));
}

// niceStep returns a step of 1, 2 or 5 times a power of ten that cuts span
// into about n parts.
function niceStep(span, n) {
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) {
    if (m * mag >= raw) return m * mag;
  }
  return 10 * mag;
}

// decimals returns how many decimals show a multiple of step exactly.
function decimals(step) {
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

// renderChart returns the <svg id="round-chart"> for the points of
// chartPoints: axes with ticks and labels, a line, and one <circle
// class="point"> per point, each with a <title> for hovering.
export function renderChart(points, metricLabel) {
  const root = svg('svg', {
    'id': 'round-chart',
    'class': 'chart',
    'viewBox': `0 0 ${W} ${H}`,
    'role': 'img',
    'aria-labelledby': 'round-chart-title',
    'data-points': points.length,
  }, svg('title', {id: 'round-chart-title'}, `${metricLabel} by round`));

  const x0 = M.left;
  const x1 = W - M.right;
  const y0 = H - M.bottom;
  const y1 = M.top;

  if (points.length === 0) {
    root.append(svg('text', {'class': 'empty', 'x': W / 2, 'y': H / 2, 'text-anchor': 'middle'},
      'No committed round with a metric yet.'));
    return root;
  }

  // x: round numbers, integer ticks.
  let rMin = points[0].round;
  let rMax = points[points.length - 1].round;
  if (rMin === rMax) { rMin -= 1; rMax += 1; }
  const xOf = (r) => x0 + (r - rMin) / (rMax - rMin) * (x1 - x0);

  // y: the metric, on a nice range around the values.
  const vals = points.map((p) => p.value);
  let vMin = Math.min(...vals);
  let vMax = Math.max(...vals);
  if (vMax - vMin < 1e-9) { vMin -= 0.05; vMax += 0.05; }
  const yStep = niceStep(vMax - vMin, 5);
  const yLo = Math.floor(vMin / yStep) * yStep;
  const yHi = Math.ceil(vMax / yStep) * yStep;
  const yOf = (v) => y0 - (v - yLo) / (yHi - yLo) * (y0 - y1);

  const grid = svg('g', {class: 'grid'});
  const ticks = svg('g', {class: 'ticks'});
  const yDec = decimals(yStep);
  for (let v = yLo, i = 0; v <= yHi + yStep / 2 && i < 50; v += yStep, i++) {
    const y = yOf(v);
    grid.append(svg('line', {x1: x0, x2: x1, y1: y, y2: y}));
    ticks.append(svg('text', {'x': x0 - 8, 'y': y + 4, 'text-anchor': 'end'}, v.toFixed(yDec)));
  }
  const xStep = Math.max(1, Math.ceil((rMax - rMin) / 10));
  for (let r = Math.ceil(rMin); r <= rMax; r += xStep) {
    const x = xOf(r);
    grid.append(svg('line', {x1: x, x2: x, y1: y0, y2: y1}));
    ticks.append(svg('text', {'x': x, 'y': y0 + 18, 'text-anchor': 'middle'}, String(r)));
  }

  const axes = svg('g', {class: 'axis'},
    svg('line', {x1: x0, x2: x1, y1: y0, y2: y0}),
    svg('line', {x1: x0, x2: x0, y1: y0, y2: y1}));
  const labels = svg('g', {class: 'axis-label'},
    svg('text', {'x': (x0 + x1) / 2, 'y': H - 8, 'text-anchor': 'middle'}, 'Round'),
    svg('text', {'x': -(y0 + y1) / 2, 'y': 16, 'text-anchor': 'middle', 'transform': 'rotate(-90)'},
      metricLabel));

  const d = points.map((p, i) => `${i === 0 ? 'M' : 'L'}${xOf(p.round).toFixed(1)},${yOf(p.value).toFixed(1)}`).join(' ');
  const line = svg('path', {class: 'line', d});

  const dots = svg('g', {class: 'points'});
  for (const p of points) {
    dots.append(svg('circle', {
      'class': 'point',
      'cx': xOf(p.round).toFixed(1),
      'cy': yOf(p.value).toFixed(1),
      'r': 4,
      'data-round': p.round,
      'data-value': p.value,
    }, svg('title', null, `Round ${p.round}: ${p.value.toFixed(3)}`)));
  }

  root.append(grid, axes, ticks, labels, line, dots);
  return root;
}
