/* Neurocyte pages: the helpers every page shares (loaded before app.js or pages.js).
 * Relative API URLs; every chart container carries data-state = loading | ready | empty |
 * error, so a person (and the browser test) can tell "no data" from "broken". */
"use strict";

const PALETTE = ["#1971c2", "#e8590c", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#5c940d", "#364fc7"];
const PLOT_CONFIG = { displaylogo: false, responsive: true };

/* A newer selection always wins: each chart (key) has at most one request in flight;
 * starting another aborts the previous one, and a response that arrives after a newer
 * request began is dropped (current() is false, the caller throws stale()), so a slow
 * answer for an earlier selection can never be drawn under a later one's name. */
const inflight = {};
let requestSeq = 0;
function begin(key) {
  const prev = inflight[key];
  if (prev) prev.controller.abort();
  const token = { controller: new AbortController(), seq: ++requestSeq };
  inflight[key] = token;
  return { signal: token.controller.signal, seq: token.seq, current: () => inflight[key] === token };
}

function stale() { const e = new Error("superseded"); e.name = "StaleResponse"; return e; }
function isAbort(err) { return !!err && (err.name === "AbortError" || err.name === "StaleResponse"); }

async function getJSON(url, signal) {
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" }, signal });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)) : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function fmt(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  return String(v);
}

function badge(status) { return el("span", { class: `badge ${status}`, text: status }); }

/* A chart's message instead of a plot: its state (empty, error, loading) and why. */
function message(div, stateName, text) {
  if (window.Plotly) Plotly.purge(div);
  div.replaceChildren(el("div", { class: "message", text }));
  div.dataset.state = stateName;
}

async function plot(div, traces, layout) {
  div.replaceChildren();
  const base = { margin: { l: 60, r: 20, t: 40, b: 50 }, font: { size: 12 }, legend: { orientation: "h", y: -0.2 } };
  await Plotly.newPlot(div, traces, Object.assign(base, layout), PLOT_CONFIG);
  div.dataset.state = "ready";
}

/* Run a chart's loader; a superseded request draws nothing, any other error is shown. */
async function guarded(div, fn) {
  try {
    await fn();
  } catch (err) {
    if (isAbort(err)) return;  // superseded by a newer selection: its own request draws
    message(div, "error", `Could not load: ${err.message}`);
  }
}
