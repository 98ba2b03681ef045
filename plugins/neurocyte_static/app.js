/* Neurocyte overview page: fetches JSON from the plugin's API and draws Plotly charts
 * (helpers in common.js). */
"use strict";

const state = { conditionColor: {}, cells: [], fi: [], selectedCell: null };

function colorFor(condition) {
  const key = String(condition);
  if (!(key in state.conditionColor)) {
    state.conditionColor[key] = PALETTE[Object.keys(state.conditionColor).length % PALETTE.length];
  }
  return state.conditionColor[key];
}

/* ---------------------------------------------------------------- overview */

async function loadOverview() {
  const chart = document.getElementById("chart-status");
  await guarded(chart, async () => {
    const data = await getJSON("api/overview");
    document.getElementById("lake-path").textContent = data.lake || "";
    const totals = document.getElementById("totals");
    totals.replaceChildren();
    for (const [status, n] of Object.entries(data.totals || {})) {
      totals.append(el("span", { class: `badge ${status}`, text: `${n} ${status}` }));
    }
    const rows = new Map();
    const key = (r) => [r.lab, r.condition, r.timepoint].join("\u0000");
    for (const r of data.status || []) {
      const k = key(r);
      if (!rows.has(k)) rows.set(k, { lab: r.lab, condition: r.condition, timepoint: r.timepoint });
      rows.get(k)[r.status] = r.n_files;
    }
    for (const r of data.recordings || []) {
      const k = key(r);
      if (!rows.has(k)) rows.set(k, { lab: r.lab, condition: r.condition, timepoint: r.timepoint });
      Object.assign(rows.get(k), { n_cells: r.n_cells, n_plates: r.n_plates, n_wells: r.n_wells });
    }
    const body = document.querySelector("#partition-table tbody");
    body.replaceChildren();
    for (const r of rows.values()) {
      const tr = el("tr");
      // A plate's file has no single condition (its wells have theirs): shown as "per well".
      for (const v of [r.lab, r.condition ?? "per well", r.timepoint]) tr.append(el("td", { text: v ?? "—" }));
      for (const v of [r.published, r.quarantined, r.failed, r.n_cells, r.n_plates, r.n_wells]) {
        tr.append(el("td", { class: "num", text: v ?? 0 }));
      }
      body.append(tr);
    }
    if (!data.available || !(data.status || []).length) {
      message(chart, "empty", data.message || "No ingested files yet.");
      return;
    }
    const labels = [...rows.values()].map((r) => `${r.lab}/${r.condition ?? "per well"}/${r.timepoint}`);
    const statuses = ["published", "quarantined", "failed"];
    const colors = { published: "#2b8a3e", quarantined: "#e67700", failed: "#c92a2a" };
    const traces = statuses.map((s) => ({
      type: "bar", name: s, x: labels, y: [...rows.values()].map((r) => r[s] || 0), marker: { color: colors[s] },
    }));
    await plot(chart, traces, { barmode: "stack", title: { text: "Files by partition and QC status" }, yaxis: { title: { text: "files" } }, xaxis: { automargin: true }, margin: { l: 50, r: 10, t: 36, b: 10 } });
  });
}

async function loadProblems() {
  const body = document.querySelector("#problem-table tbody");
  const empty = document.getElementById("problems-empty");
  try {
    const data = await getJSON("api/problems");
    body.replaceChildren();
    const files = data.files || [];
    empty.hidden = files.length > 0;
    if (!data.available) { empty.textContent = data.message; empty.hidden = false; }
    for (const f of files) {
      const docs = el("td");
      for (const d of f.docs || []) {
        if (!d.path) continue;
        const mark = d.success ? "\u2713" : "\u2717";
        docs.append(el("a", {
          class: `docs ${d.success ? "" : "failed-table"}`, href: `qc-docs/${d.path}`, target: "_blank",
          rel: "noopener", "data-table": d.table, text: `${d.table} ${mark}`,
          title: d.success ? "passed" : `failed: ${(d.failed_expectations || []).join(", ")}`,
        }));
      }
      if (!docs.childNodes.length) docs.textContent = f.status === "failed" ? "not validated (decode failed)" : "—";
      const tr = el("tr", { "data-file-id": f.file_id, "data-status": f.status },
        el("td", { text: f.file_name, title: f.source_path || "" }),
        el("td", {}, el("span", { class: `badge ${f.status}`, text: f.status })),
        el("td", { text: [f.lab, f.condition, f.timepoint].map((v) => v ?? "—").join(" / ") }),
        el("td", { class: "reason", text: f.reason || "" }),
        docs);
      body.append(tr);
    }
  } catch (err) {
    empty.hidden = false;
    empty.textContent = `Could not load: ${err.message}`;
  }
}

/* ---------------------------------------------------------------- patch clamp */

async function loadCells() {
  const select = document.getElementById("cell-select");
  const fiDiv = document.getElementById("chart-fi");
  await guarded(fiDiv, async () => {
    const [cells, fi] = await Promise.all([getJSON("api/cells"), getJSON("api/fi")]);
    state.cells = cells.cells || [];
    state.fi = fi.curves || [];
    select.replaceChildren();
    for (const c of state.cells) {
      select.append(el("option", { value: c.file_id, text: `${c.cell_id || c.file_name} (${c.condition}, ${c.timepoint})` }));
    }
    const withCurve = state.fi.length ? state.fi[0].file_id : (state.cells[0] || {}).file_id;
    state.selectedCell = withCurve || null;
    if (state.selectedCell) select.value = state.selectedCell;
    drawFI(fi);
    await loadSweeps();
  });
}

function drawFI(fi) {
  const div = document.getElementById("chart-fi");
  if (!state.fi.length) {
    message(div, "empty", (fi && fi.message) || "No long-square sweeps published yet: no f-I curves.");
    return;
  }
  const yKey = document.getElementById("fi-y").value;
  const seen = new Set();
  const traces = [];
  const failed = { x: [], y: [], text: [], ids: [], color: [] };
  for (const c of state.fi) {
    const selected = c.file_id === state.selectedCell;
    const ok = { x: [], y: [], sweep: [] };
    c.stim_amp_pa.forEach((amp, k) => {
      if (c.qc_pass[k] === false) {
        failed.x.push(amp); failed.y.push(c[yKey][k]); failed.ids.push(c.file_id);
        failed.color.push(colorFor(c.condition));
        failed.text.push(`${c.cell_id || c.file_name}, sweep ${c.sweep_number[k]}<br>QC failed: ${c.qc_reasons[k] || "?"}`);
      } else { ok.x.push(amp); ok.y.push(c[yKey][k]); ok.sweep.push(c.sweep_number[k]); }
    });
    if (!ok.x.length) continue;
    const legend = !seen.has(c.condition);
    seen.add(c.condition);
    traces.push({
      type: "scatter", mode: "lines+markers", name: String(c.condition), legendgroup: String(c.condition),
      showlegend: legend, x: ok.x, y: ok.y, customdata: ok.sweep,
      text: c.cell_id || c.file_name,
      hovertemplate: "%{text}<br>%{x} pA → %{y}<br>sweep %{customdata}<extra></extra>",
      line: { color: colorFor(c.condition), width: selected ? 4 : 1.5 },
      marker: { size: selected ? 8 : 5 }, opacity: selected ? 1 : 0.55,
      meta: c.file_id,
    });
  }
  const yTitle = yKey === "spike_count" ? "spike count" : "mean rate (Hz)";
  const layout = {
    title: { text: "f-I curves (long-square sweeps that pass sweep QC)" },
    xaxis: { title: { text: "stimulus amplitude (pA)" }, anchor: "y" },
    yaxis: { title: { text: yTitle }, domain: failed.x.length ? [0.36, 1] : [0, 1] },
  };
  if (failed.x.length) {
    // QC-failed sweeps on their own axes below: shown and labelled, never stretching the curves' axes.
    traces.push({
      type: "scatter", mode: "markers", name: `QC-failed sweeps (${failed.x.length}, not in the curves)`,
      x: failed.x, y: failed.y, text: failed.text, xaxis: "x2", yaxis: "y2", meta: "qc-failed",
      hovertemplate: "%{text}<br>%{x} pA → %{y}<extra></extra>",
      marker: { symbol: "x-thin-open", size: 8, color: failed.color, line: { width: 1.5 } },
    });
    layout.xaxis2 = { anchor: "y2", title: { text: "QC-failed sweeps: stimulus amplitude (pA)" } };
    layout.yaxis2 = { domain: [0, 0.2], title: { text: yTitle } };
    layout.margin = { l: 60, r: 20, t: 36, b: 50 };
  }
  div.dataset.failedSweeps = String(failed.x.length);
  plot(div, traces, layout).then(() => {
    div.on("plotly_click", (ev) => {
      const id = ev.points && ev.points[0] && ev.points[0].data.meta;
      if (id && id !== "qc-failed") { selectCell(id); }
    });
  });
}

function selectCell(id) {
  state.selectedCell = id;
  document.getElementById("cell-select").value = id;
  drawFI();
  loadSweeps();
}

async function loadSweeps() {
  const div = document.getElementById("chart-sweeps");
  if (!state.selectedCell) { message(div, "empty", "No published cell."); return; }
  const fileId = state.selectedCell;
  const req = begin("sweeps");
  message(div, "loading", "Reading sweeps from the raw file…");
  div.dataset.fileId = fileId;
  await guarded(div, async () => {
    const data = await getJSON(`api/cells/${fileId}/sweeps`, req.signal);
    if (!req.current()) throw stale();
    if (!data.available || !(data.sweeps || []).length) { message(div, "empty", data.message || "No sweeps."); return; }
    const traces = [];
    data.sweeps.forEach((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      const amp = s.stim_amp_pa === null || s.stim_amp_pa === undefined ? "" : `, ${s.stim_amp_pa} pA`;
      traces.push({
        type: "scatter", mode: "lines", name: `sweep ${s.sweep} (${s.role}${amp})`, x: s.t_s, y: s.y,
        line: { color, width: 1 },
      });
      if (s.spikes && s.spikes.peak_t_s && s.spikes.peak_t_s.length) {
        traces.push({
          type: "scatter", mode: "markers", name: `spikes, sweep ${s.sweep} (${s.spikes.peak_t_s.length})`,
          x: s.spikes.peak_t_s, y: s.spikes.peak_v_mv, marker: { color, symbol: "x", size: 7 },
        });
      }
    });
    const unit = data.sweeps[0].unit;
    const cell = state.cells.find((c) => c.file_id === fileId) || {};
    await plot(div, traces, {
      title: { text: `${cell.cell_id || cell.file_name || fileId.slice(0, 12)}: example sweeps with detected spikes` },
      xaxis: { title: { text: "time from sweep start (s)" } },
      yaxis: { title: { text: `response (${unit})` } },
    });
  });
}

/* ---------------------------------------------------------------- MEA */

async function loadPlates() {
  const select = document.getElementById("plate-select");
  const raster = document.getElementById("chart-raster");
  const heat = document.getElementById("chart-heatmap");
  try {
    const data = await getJSON("api/plates");
    const plates = data.plates || [];
    select.replaceChildren();
    for (const p of plates) {
      select.append(el("option", { value: p.file_id, text: `${p.file_name || p.file_id.slice(0, 12)} (${p.lab}, ${p.timepoint})` }));
    }
    if (!plates.length) {
      const msg = data.message || "No MEA plates published yet.";
      message(raster, "empty", msg);
      message(heat, "empty", msg);
      return;
    }
    await Promise.all([loadHeatmap(), loadRaster()]);
  } catch (err) {
    message(raster, "error", `Could not load: ${err.message}`);
    message(heat, "error", `Could not load: ${err.message}`);
  }
}

async function loadHeatmap() {
  const div = document.getElementById("chart-heatmap");
  const plate = document.getElementById("plate-select").value;
  const req = begin("heatmap");
  await guarded(div, async () => {
    const data = await getJSON(`api/plates/${plate}/heatmap`, req.signal);
    if (!req.current()) throw stale();
    const wellSelect = document.getElementById("well-select");
    const current = wellSelect.value;
    wellSelect.replaceChildren(el("option", { value: "", text: "all wells" }));
    if (!data.available) { message(div, "empty", data.message || "No well metrics."); return; }
    for (const r of data.rows) for (const c of data.cols) wellSelect.append(el("option", { value: `${r}${c}`, text: `${r}${c}` }));
    wellSelect.value = current;
    const text = data.z.map((row, i) => row.map((v, j) => `${data.rows[i]}${data.cols[j]}<br>${data.conditions[i][j] ?? ""}`));
    await plot(div, [{
      type: "heatmap", z: data.z, x: data.cols.map(String), y: data.rows, text, colorscale: "Viridis",
      hovertemplate: "%{text}<br>%{z:.3g}<extra></extra>", colorbar: { title: { text: "Hz" } }, xgap: 2, ygap: 2,
    }], {
      title: { text: `Wells: ${data.label}` },
      xaxis: { type: "category", side: "top" }, yaxis: { type: "category", autorange: "reversed" },
    });
  });
}

function drawRaster(div, data, title) {
  const wells = Object.entries(data.wells || {});
  // One tick per well (readable for 12 to 96 wells); hover names the electrode.
  const tickEvery = Math.max(1, Math.ceil(wells.length / 24));
  const ticks = wells.filter((_, k) => k % tickEvery === 0);
  const counted = data.decimated;
  const n = data.n_spikes.toLocaleString("en-US");
  const span = `${(+data.start_s).toFixed(1)}–${(+data.stop_s).toFixed(1)} s`;
  const label = counted
    ? `decimated: all ${n} spikes of ${span} as ${data.n_marks.toLocaleString("en-US")} marks, one per electrode per ${(data.bin_s * 1000).toPrecision(3)} ms bin with ≥ 1 spike`
    : `all ${n} spikes of ${span}`;
  div.dataset.decimated = String(!!counted);
  div.dataset.nSpikes = String(data.n_spikes);
  return plot(div, [{
    type: "scatter", mode: "markers", name: "spikes", x: data.time_s, y: data.electrode_index,
    text: data.electrode_index.map((i, k) => `${data.electrodes[i]}${counted ? `, ${data.count[k]} spikes in bin` : ""}`),
    hovertemplate: "%{text}<br>%{x:.4f} s<extra></extra>",
    marker: { symbol: "line-ns-open", size: 5, color: "#1f2933", line: { width: 1 } },
  }], {
    title: { text: `${title}<br><sup>${label}</sup>` },
    xaxis: { title: { text: "time (s)" }, range: [data.start_s, data.stop_s] },
    yaxis: { title: { text: "well (electrodes)" }, tickmode: "array", tickvals: ticks.map(([, i]) => i), ticktext: ticks.map(([w]) => w), autorange: "reversed", zeroline: false },
    showlegend: false, margin: { l: 60, r: 20, t: 60, b: 50 },
  });
}

async function loadRaster() {
  const div = document.getElementById("chart-raster");
  const plate = document.getElementById("plate-select").value;
  const well = document.getElementById("well-select").value;
  const req = begin("raster");
  await guarded(div, async () => {
    const query = new URLSearchParams({ max_marks: "20000" });
    if (well) query.set("well", well);
    const data = await getJSON(`api/plates/${plate}/raster?${query}`, req.signal);
    if (!req.current()) throw stale();
    if (!data.available || !data.time_s.length) { message(div, "empty", data.message || "No spikes."); return; }
    await drawRaster(div, data, `Raster, ${well || "all wells"}`);
  });
}

/* ---------------------------------------------------------------- trajectories */

async function loadMetrics() {
  const select = document.getElementById("metric-select");
  const div = document.getElementById("chart-trajectory");
  await guarded(div, async () => {
    const data = await getJSON("api/metrics");
    select.replaceChildren();
    for (const m of data.metrics || []) select.append(el("option", { value: m.key, text: `${m.label} — per ${m.unit}` }));
    if (!(data.metrics || []).length) { message(div, "empty", data.message || "No metrics yet."); return; }
    // Start with the first metric that has values (unless the user picks one meanwhile).
    const req = begin("trajectory");
    for (const m of data.metrics) {
      const t = await getJSON(`api/trajectory/${m.key}`, req.signal);
      if (!req.current()) return;
      if (t.available) { select.value = m.key; await drawTrajectory(t); return; }
    }
    await loadTrajectory();
  });
}

async function loadTrajectory() {
  const div = document.getElementById("chart-trajectory");
  const metric = document.getElementById("metric-select").value;
  const req = begin("trajectory");
  await guarded(div, async () => {
    const data = await getJSON(`api/trajectory/${metric}`, req.signal);
    if (!req.current()) throw stale();
    await drawTrajectory(data);
  });
}

/* Group view: condition x timepoint, mean ± SEM with n, every observation drawn, the
 * conditions dodged side by side at each timepoint so no error bars overlap. */
function groupTraces(data) {
  const conds = data.series.map((s) => s.condition);
  const width = 0.7;
  const step = conds.length > 1 ? width / conds.length : 0;
  const traces = [];
  data.series.forEach((s, k) => {
    const offset = (k - (conds.length - 1) / 2) * step;
    const color = colorFor(s.condition);
    const xs = s.timepoint.map((tp) => data.timepoints.indexOf(tp) + offset);
    const px = [], py = [], ptext = [];
    s.points.forEach((pts, g) => pts.forEach((p, m) => {
      // a fixed spread (not random), so the same data always draws the same
      const jitter = pts.length > 1 ? ((m / (pts.length - 1)) - 0.5) * step * 0.5 : 0;
      px.push(xs[g] + jitter); py.push(p.value);
      ptext.push(`${p.well ? p.well + " of " : ""}${p.file_id.slice(0, 10)}`);
    }));
    traces.push({
      type: "scatter", mode: "markers", name: `${s.condition} (points)`, legendgroup: s.condition, showlegend: false,
      x: px, y: py, text: ptext, hovertemplate: `${s.condition}: %{y:.4g}<br>%{text}<extra></extra>`,
      marker: { color, size: 5, opacity: 0.45 }, meta: "points",
    });
    traces.push({
      type: "scatter", mode: "lines+markers+text", name: s.condition, legendgroup: s.condition,
      x: xs, y: s.mean, text: s.n.map((n) => `n=${n}`), textposition: "middle right", textfont: { size: 10, color },
      error_y: { type: "data", array: s.sem.map((v) => v ?? 0), visible: true, color, thickness: 1.5, width: 5 },
      customdata: s.n.map((n, g) => [n, s.sem[g], s.sd[g], s.timepoint[g]]),
      hovertemplate: `${s.condition} %{customdata[3]}: %{y:.4g} ± %{customdata[1]:.3g} SEM (SD %{customdata[2]:.3g}, n=%{customdata[0]})<extra></extra>`,
      line: { color }, marker: { color, size: 10, symbol: "diamond" }, meta: "means",
    });
  });
  return traces;
}

async function drawTrajectory(data) {
  const div = document.getElementById("chart-trajectory");
  if (!data.available) { message(div, "empty", data.message || "No values yet."); return; }
  await plot(div, groupTraces(data), {
    title: { text: `${data.label}: mean ± SEM per condition × timepoint (n = ${data.unit_of_observation}s)<br><sup>${data.observation_rule || ""}</sup>` },
    xaxis: { title: { text: "timepoint" }, tickmode: "array", tickvals: data.timepoints.map((_, i) => i), ticktext: data.timepoints, range: [-0.6, data.timepoints.length - 0.4], zeroline: false },
    yaxis: { title: { text: data.label } }, margin: { l: 60, r: 20, t: 60, b: 50 },
  });
}

/* ---------------------------------------------------------------- curation */

async function loadCuration() {
  try {
    const [me, log, ex] = await Promise.all([getJSON("api/me"), getJSON("api/curation"), getJSON("api/excluded")]);
    document.getElementById("me").textContent = `${me.user} (${me.roles.join(", ") || "no role"}) ${me.curator ? "is a curator" : "is not a curator: read only"}`;
    const exBody = document.querySelector("#excluded-table tbody");
    exBody.replaceChildren();
    for (const x of ex.excluded || []) {
      exBody.append(el("tr", { "data-file-id": x.file_id, "data-well": x.well ?? "" },
        el("td", { text: x.target_kind }), el("td", { text: x.file_name || x.file_id.slice(0, 12) }),
        el("td", { text: x.well ?? (x.sweep_number ?? "—") }), el("td", { class: "reason", text: x.reason }),
        el("td", { text: x.curator }), el("td", { text: x.excluded_at })));
    }
    const body = document.querySelector("#curation-table tbody");
    body.replaceChildren();
    for (const a of log.actions || []) {
      body.append(el("tr", { "data-action": a.action },
        el("td", { text: a.acted_at }), el("td", { text: a.curator }), el("td", { text: a.action }),
        el("td", { text: a.target_kind }), el("td", { text: a.file_id.slice(0, 12) }),
        el("td", { text: a.well ?? (a.sweep_number ?? "—") }), el("td", { class: "reason", text: a.reason })));
    }
  } catch (err) {
    document.getElementById("me").textContent = `Could not load: ${err.message}`;
  }
}

document.getElementById("curation-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const body = { action: form.get("action"), target_kind: form.get("target_kind"), file_id: form.get("file_id"), reason: form.get("reason") };
  if (body.target_kind === "well") body.well = form.get("well");
  if (body.target_kind === "sweep") body.sweep_number = Number(form.get("sweep_number"));
  const out = document.getElementById("curation-result");
  out.textContent = "recording…";
  const r = await fetch("api/curation", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body) });
  const j = await r.json().catch(() => ({}));
  out.textContent = r.ok ? `recorded (${j.recorded.action_id.slice(0, 8)})` : `refused: ${typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail)}`;
  out.dataset.state = r.ok ? "ok" : "error";
  if (r.ok) { loadCuration(); loadOverview(); loadCells(); loadPlates(); loadTrajectory(); }
});

/* ---------------------------------------------------------------- wiring */

document.getElementById("cell-select").addEventListener("change", (e) => selectCell(e.target.value));
document.getElementById("fi-y").addEventListener("change", () => drawFI());
document.getElementById("plate-select").addEventListener("change", () => { document.getElementById("well-select").value = ""; loadHeatmap(); loadRaster(); });
document.getElementById("well-select").addEventListener("change", () => loadRaster());
document.getElementById("metric-select").addEventListener("change", () => loadTrajectory());

if (!window.Plotly) {
  for (const div of document.querySelectorAll(".chart")) message(div, "error", "plotly.js did not load (vendor/plotly.min.js).");
} else {
  loadOverview();
  loadProblems();
  loadCells();
  loadPlates();
  loadMetrics();
  loadCuration();
}
