// The explorer's live parts: polls the JSON API and redraws with DOM calls (textContent only, never innerHTML).
"use strict";
const PAGE = JSON.parse(document.getElementById("page-data").textContent);
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fde", "#e67e22", "#1d8a4b", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d"];
let headHeight = null;

function el(tag, attrs = {}, text = null, ns = null) {
  const node = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = String(text);
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

function utc(ms) {
  return new Date(Number(ms)).toISOString().replace("T", " ").slice(0, 19);
}

function fixTimes(root = document) {
  for (const cell of root.querySelectorAll(".time[data-ms]")) cell.textContent = utc(cell.dataset.ms);
}

function fmt(x, digits = 4) { return x === null || x === undefined ? "-" : Number(x).toFixed(digits); }

// A line chart in an <svg viewBox="0 0 640 260">: series = [{name, points: [[x, y], ...]}].
function drawChart(svg, series, { bars = false, yMin = null, yMax = null } = {}) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const all = series.flatMap(s => s.points);
  if (all.length === 0) {
    svg.appendChild(el("text", { x: 250, y: 130 }, "no data yet", SVG));
    return;
  }
  const W = 640, H = 260, L = 48, R = 12, T = 12, B = 28;
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  let y0 = yMin ?? Math.min(...ys), y1 = yMax ?? Math.max(...ys);
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  svg.appendChild(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#bbb" }, null, SVG));
  svg.appendChild(el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#bbb" }, null, SVG));
  for (const [v, y] of [[y0, sy(y0)], [y1, sy(y1)]]) svg.appendChild(el("text", { x: 4, y: y + 4 }, fmt(v, 3), SVG));
  svg.appendChild(el("text", { x: L, y: H - 8 }, String(x0), SVG));
  svg.appendChild(el("text", { x: W - R - 30, y: H - 8 }, String(x1), SVG));
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    const group = el("g", { "data-series": s.name }, null, SVG);
    if (bars) {
      for (const [x, y, base = 0] of s.points) {
        group.appendChild(el("rect", { class: "pt", x: sx(x) - 8, width: 16, y: sy(base + y), height: Math.max(0, sy(base) - sy(base + y)), fill: color }, null, SVG));
      }
    } else {
      group.appendChild(el("polyline", { fill: "none", stroke: color, "stroke-width": 2, points: s.points.map(p => sx(p[0]) + "," + sy(p[1])).join(" ") }, null, SVG));
      for (const [x, y] of s.points) group.appendChild(el("circle", { class: "pt", cx: sx(x), cy: sy(y), r: 3.5, fill: color }, null, SVG));
    }
    group.appendChild(el("text", { x: L + 10, y: H - B - 10 - 14 * i, fill: color }, s.name, SVG));
    svg.appendChild(group);
  });
}

function renderRounds(container, rounds) {
  container.replaceChildren();
  if (!rounds.length) { container.appendChild(el("span", { class: "muted" }, "no round in flight")); return; }
  for (const r of rounds) {
    const row = el("div", { class: "round" });
    row.appendChild(document.createTextNode("round for task "));
    row.appendChild(el("a", { href: "/tasks/" + encodeURIComponent(r.task_id), class: "mono" }, r.task_id.slice(0, 12)));
    row.appendChild(document.createTextNode(": phase " + r.phase + " "));
    for (const a of Object.values(r.actors || {})) {
      const epoch = a.epochs ? " " + a.epoch + "/" + a.epochs : "";
      const acc = a.val_accuracy === null || a.val_accuracy === undefined ? "" : " acc " + fmt(a.val_accuracy, 3);
      row.appendChild(el("span", { class: "actor" }, a.name + ": " + a.stage + epoch + acc));
    }
    container.appendChild(row);
  }
}

function chainRow(r) {
  const tr = el("tr", { "data-height": r.height });
  const td = (child) => { const cell = el("td"); if (child instanceof Node) cell.appendChild(child); else cell.textContent = child; tr.appendChild(cell); };
  td(el("a", { href: "/blocks/" + r.height }, r.height));
  td(el("span", { class: "mono" }, r.hash.slice(0, 12)));
  td(utc(r.timestamp));
  td(r.task_id ? el("a", { href: "/tasks/" + r.task_id, class: "mono" }, r.task_id.slice(0, 12)) : (r.height === 0 ? "genesis" : "(transfers)"));
  td(r.winner ? el("a", { href: "/accounts/" + r.winner }, r.winner_name || r.winner.slice(0, 12)) : "-");
  td(fmt(r.score)); td(r.interval_s === null ? "-" : fmt(r.interval_s, 1)); td(fmt(r.difficulty));
  td(r.submissions); td(r.votes); td(r.txs);
  return tr;
}

async function refreshChain() {
  const rows = await getJSON("/api/chain");
  document.querySelector("#chain tbody").replaceChildren(...rows.reverse().map(chainRow));
}

async function refreshTask() {
  const t = await getJSON("/api/tasks/" + encodeURIComponent(PAGE.task_id));
  document.getElementById("task-status").textContent = t.status;
  const round = document.getElementById("task-round");
  if (t.live.round) renderRounds(round, [t.live.round]); else round.textContent = "no round in flight";
  const series = Object.entries(t.live.curve).map(([name, points]) => ({ name, points }));
  drawChart(document.getElementById("curve"), series, { yMin: 0, yMax: 1 });
  const note = document.getElementById("curve-note");
  note.textContent = series.length ? "" : "no curve: the explorer was not watching this task's round";
}

async function refreshCharts() {
  const c = await getJSON("/api/charts");
  drawChart(document.getElementById("chart-accuracy"), [{ name: "accuracy", points: c.accuracy.map(p => [p.height, p.score]) }], { yMax: 1 });
  drawChart(document.getElementById("chart-intervals"), [{ name: "interval s", points: c.intervals.map(p => [p.height, p.interval_s]) }], { yMin: 0 });
  drawChart(document.getElementById("chart-difficulty"), [{ name: "difficulty", points: c.difficulty.map(p => [p.height, p.difficulty]) }]);
  const t = c.round_times;
  const top = t.map(p => p.train_s + p.eval_s + p.other_s);
  drawChart(document.getElementById("chart-times"), [
    { name: "training", points: t.map(p => [p.height, p.train_s, 0]) },
    { name: "evaluation", points: t.map(p => [p.height, p.eval_s, p.train_s]) },
    { name: "other", points: t.map(p => [p.height, p.other_s, p.train_s + p.eval_s]) },
  ], { bars: true, yMin: 0, yMax: top.length ? Math.max(...top) : 1 });
}

const REFRESH = { chain: refreshChain, task: refreshTask, charts: refreshCharts };

async function poll() {
  try {
    const live = await getJSON("/api/live");
    const rounds = document.getElementById("live-rounds");
    if (rounds) renderRounds(rounds, live.rounds);
    const source = document.getElementById("live-source");
    if (source) source.textContent = live.up ? live.source : "no network (" + live.detail + ")";
    const height = live.head ? live.head.height : null;
    if (live.head) document.getElementById("head").textContent = "height " + height + " · head " + live.head.hash.slice(0, 12);
    const refresh = REFRESH[PAGE.page];
    if (refresh && (PAGE.page === "task" ? live.rounds.length || height !== headHeight : height !== headHeight)) await refresh();
    headHeight = height;
  } catch (e) {
    const source = document.getElementById("live-source");
    if (source) source.textContent = "explorer not reachable";
  }
}

fixTimes();
if (PAGE.page === "task") refreshTask().catch(() => {});
if (PAGE.page === "charts") refreshCharts().catch(() => {});
if (PAGE.page !== "error") { poll(); setInterval(poll, 700); }
// No ledger yet (a demo still starting): reload once its genesis is written.
if (PAGE.code === "ledger_unavailable") setInterval(() => getJSON("/api/live").then(l => { if (l.head) location.reload(); }).catch(() => {}), 1000);
