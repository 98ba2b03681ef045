/* Neurocyte search, per-cell, per-plate and upload pages (body[data-page]); the shared
 * helpers (requests where a newer selection wins, el, message, plot) are in common.js. */
"use strict";

function chart(id, cls = "chart") { return el("div", { id, class: cls, "data-state": "loading" }); }


function table(headers, rows, attrs) {
  const t = el("table", Object.assign({ class: "data" }, attrs || {}));
  t.append(el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { text: h })))));
  const body = el("tbody");
  for (const r of rows) body.append(r);
  t.append(body);
  return el("div", { class: "table-wrap" }, t);
}


function docsLinks(docs) {
  const span = el("span");
  for (const d of docs || []) {
    if (!d.path) continue;
    span.append(el("a", { class: `docs ${d.success ? "" : "failed-table"}`, href: `qc-docs/${d.path}`, target: "_blank", rel: "noopener", text: `${d.table} ${d.success ? "\u2713" : "\u2717"}` }));
  }
  return span;
}

const params = new URLSearchParams(location.search);
const main = document.getElementById("main");

/* ---------------------------------------------------------------- search */

async function searchPage() {
  const facetsDiv = el("div", { id: "facets", class: "facets" });
  const results = el("div", { id: "results" });
  const text = el("input", { id: "search-text", placeholder: "file, cell or plate name", size: "30" });
  const from = el("input", { id: "date-from", type: "date" });
  const to = el("input", { id: "date-to", type: "date" });
  main.append(el("section", {}, el("h2", { text: "Search recordings" }),
    el("div", { class: "row" }, el("label", { text: "Text " }, text), el("label", { text: "Date from " }, from), el("label", { text: "to " }, to)),
    el("div", { class: "search-layout" }, facetsDiv, results)));
  const chosen = {};
  for (const [k, v] of params) { if (!["q", "date_from", "date_to"].includes(k)) (chosen[k] = chosen[k] || new Set()).add(v); }
  text.value = params.get("q") || ""; from.value = params.get("date_from") || ""; to.value = params.get("date_to") || "";

  async function run() {
    const req = begin("search");
    const q = new URLSearchParams();
    for (const [k, vs] of Object.entries(chosen)) for (const v of vs) q.append(k, v);
    if (text.value) q.set("q", text.value);
    if (from.value) q.set("date_from", from.value);
    if (to.value) q.set("date_to", to.value);
    history.replaceState(null, "", `?${q}`);
    let data;
    try { data = await getJSON(`api/search?${q}`, req.signal); } catch (err) {
      if (err.name !== "AbortError") results.replaceChildren(el("p", { class: "empty", text: `Could not load: ${err.message}` }));
      return;
    }
    if (!req.current()) return;
    facetsDiv.replaceChildren();
    for (const [facet, values] of Object.entries(data.facets || {})) {
      const box = el("fieldset", { "data-facet": facet }, el("legend", { text: facet.replace("_", " ") }));
      for (const v of values) {
        const cb = el("input", { type: "checkbox", value: v.value, "data-facet": facet });
        cb.checked = !!(chosen[facet] && chosen[facet].has(v.value));
        cb.addEventListener("change", () => {
          const set = chosen[facet] = chosen[facet] || new Set();
          if (cb.checked) set.add(v.value); else set.delete(v.value);
          run();
        });
        box.append(el("label", { class: "facet" }, cb, ` ${v.value} (${v.count})`));
      }
      facetsDiv.append(box);
    }
    const rows = data.results.map((r) => {
      const page = r.kind === "plate" ? "plate" : "cell";
      const link = r.kind === "file" ? el("span", { text: r.file_name }) : el("a", { href: `${page}.html?file_id=${r.file_id}`, class: "result-link", text: r.file_name });
      return el("tr", { "data-file-id": r.file_id, "data-kind": r.kind },
        el("td", {}, link), el("td", { text: r.kind }), el("td", { text: r.name ?? "—" }), el("td", {}, badge(r.qc_status)),
        el("td", { text: r.lab ?? "—" }), el("td", { text: r.condition ?? "—" }), el("td", { text: r.timepoint ?? "—" }),
        el("td", { text: r.subject ?? "—" }), el("td", { text: r.species ?? "—" }), el("td", { text: r.protocol ?? "—" }),
        el("td", { text: (r.date || "").slice(0, 10) }));
    });
    const downloads = el("p", { class: "hint" }, `${data.n_results} recordings. `);
    results.replaceChildren(downloads, table(["File", "Kind", "Cell / plate", "QC", "Lab", "Condition", "Timepoint", "Subject", "Species", "Protocol", "Date"], rows, { id: "results-table" }));
    results.dataset.state = "ready";
  }
  for (const input of [text, from, to]) input.addEventListener("input", () => run());
  await run();
}

/* ---------------------------------------------------------------- cell */

async function cellPage() {
  const fileId = params.get("file_id");
  const data = await getJSON(`api/cells/${fileId}`);
  const rec = data.recording || {};
  const title = rec.cell_id || data.attempt.file_name;
  document.title = `Neurocyte — ${title}`;
  const qc = data.qc;
  const meta = Object.entries(rec).filter(([k]) => !["file_id", "ingest_id", "transform_version", "timepoint_days"].includes(k));
  main.append(
    el("h2", { id: "cell-title", text: `Cell ${title}` }),
    el("p", {}, badge(qc.status), ` ${data.attempt.file_name} · ${data.attempt.lab} / ${data.attempt.condition ?? "—"} / ${data.attempt.timepoint ?? "—"} · file_id ${fileId.slice(0, 12)}… `,
      el("span", { id: "qc-report-links" }, "QC report: ", el("a", { href: `qc-report/${fileId}`, target: "_blank", id: "qc-report-link", text: "this file's QC report" }), " ", docsLinks(qc.docs)),
      " · ", el("a", { href: `api/download/nwb/${fileId}`, id: "download-nwb", text: "NWB" }),
      " · ", el("a", { href: `api/download/original/${fileId}`, id: "download-original", text: "original file" })),
    qc.reason ? el("p", { class: "reason", text: `QC: ${qc.reason}` }) : "",
    qc.failed_sweeps.length ? el("p", { class: "reason", id: "failed-sweeps", text: `Sweeps failing sweep QC: ${qc.failed_sweeps.map((s) => `${s.sweep_number} (${s.qc_reasons})`).join("; ")}` }) : "",
    data.excluded.length ? el("p", { class: "reason", text: `Excluded: ${data.excluded.map((x) => `${x.target_kind} ${x.sweep_number ?? ""}: ${x.reason} (${x.curator})`).join("; ")}` }) : "",
    el("details", {}, el("summary", { text: "Metadata" }), table(["field", "value"], meta.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: fmt(v) }))))),
  );
  const sweepSel = el("select", { id: "sweep-select" });
  for (const s of data.sweeps) {
    sweepSel.append(el("option", { value: s.sweep_number, text: `sweep ${s.sweep_number} — ${s.stimulus_kind}${s.stim_amp_pa != null ? ` ${s.stim_amp_pa} pA` : ""}, ${s.spike_count ?? 0} spikes${s.qc_pass === false ? " — QC failed" : ""}` }));
  }
  const sweepDiv = chart("chart-sweep"), stimDiv = chart("chart-stimulus", "chart small"), wfDiv = chart("chart-waveforms"), fiDiv = chart("chart-cell-fi");
  main.append(el("section", {}, el("h3", { text: "Sweep browser" }), el("label", { text: "Sweep " }, sweepSel),
    el("div", { class: "row" }, el("div", { class: "col" }, sweepDiv, stimDiv), el("div", { class: "col" }, wfDiv))));
  main.append(el("section", {}, el("h3", { text: "f-I curve" }), fiDiv));
  const featRows = data.features.map((f) => el("tr", {}, el("td", { text: f.analysis }), el("td", { text: f.feature }), el("td", { class: "num", text: fmt(f.value) }), el("td", { text: f.unit })));
  main.append(el("section", {}, el("h3", { text: "Features (IPFX definitions: see the README's icephys_cell_features)" }), table(["analysis", "feature", "value", "unit"], featRows, { id: "feature-table" })));

  async function loadSweep() {
    const n = sweepSel.value;
    const req = begin("sweep");
    message(sweepDiv, "loading", "Reading the sweep from the raw file…");
    await guarded(sweepDiv, async () => {
      const s = await getJSON(`api/cells/${fileId}/sweeps/${n}`, req.signal);
      if (!req.current()) throw stale();
      sweepDiv.dataset.sweep = String(s.sweep);
      const traces = [{ type: "scatter", mode: "lines", name: `response (${s.unit})`, x: s.t_s, y: s.y, line: { width: 1, color: PALETTE[0] } }];
      if (s.spikes && s.spikes.peak_t_s && s.spikes.peak_t_s.length) {
        traces.push({ type: "scatter", mode: "markers", name: `spikes (${s.spikes.peak_t_s.length})`, x: s.spikes.peak_t_s, y: s.spikes.peak_v_mv, marker: { symbol: "x", size: 8, color: PALETTE[1] } });
      }
      await plot(sweepDiv, traces, { title: { text: `Sweep ${s.sweep}: response with detected spikes` }, xaxis: { title: { text: "time (s)" } }, yaxis: { title: { text: s.unit } } });
      if (s.stimulus) {
        await plot(stimDiv, [{ type: "scatter", mode: "lines", name: "stimulus", x: s.stimulus.t_s, y: s.stimulus.y, line: { width: 1, color: "#364fc7" } }], { title: { text: "Stimulus (command)" }, xaxis: { title: { text: "time (s)" } }, yaxis: { title: { text: s.stimulus.unit } }, showlegend: false, margin: { l: 60, r: 20, t: 30, b: 40 } });
      } else message(stimDiv, "empty", "The file holds no command waveform for this sweep.");
      if (s.waveforms.y.length) {
        await plot(wfDiv, s.waveforms.y.map((y, k) => ({ type: "scatter", mode: "lines", x: s.waveforms.t_ms, y, name: `spike ${k + 1}`, line: { width: 1, color: PALETTE[k % PALETTE.length] }, opacity: 0.7 })), { title: { text: `Spike waveforms (${s.waveforms.y.length}), aligned at threshold` }, xaxis: { title: { text: "time from threshold (ms)" } }, yaxis: { title: { text: s.unit } }, showlegend: false });
      } else message(wfDiv, "empty", "No spikes in this sweep.");
    });
  }
  sweepSel.addEventListener("change", loadSweep);
  const firstSpiking = data.sweeps.find((s) => (s.spike_count || 0) > 0);
  if (firstSpiking) sweepSel.value = String(firstSpiking.sweep_number);
  if (data.fi) {
    const c = data.fi, ok = { x: [], y: [] }, bad = { x: [], y: [], t: [] };
    c.stim_amp_pa.forEach((a, k) => { if (c.qc_pass[k] === false) { bad.x.push(a); bad.y.push(c.spike_count[k]); bad.t.push(`sweep ${c.sweep_number[k]}: ${c.qc_reasons[k]}`); } else { ok.x.push(a); ok.y.push(c.spike_count[k]); } });
    const traces = [{ type: "scatter", mode: "lines+markers", name: "QC-passing sweeps", x: ok.x, y: ok.y, line: { color: PALETTE[0] } }];
    const layout = { title: { text: "f-I (long-square sweeps)" }, xaxis: { title: { text: "stimulus (pA)" } }, yaxis: { title: { text: "spike count" }, domain: bad.x.length ? [0.36, 1] : [0, 1] } };
    if (bad.x.length) {
      traces.push({ type: "scatter", mode: "markers", name: `QC-failed sweeps (${bad.x.length})`, x: bad.x, y: bad.y, text: bad.t, xaxis: "x2", yaxis: "y2", marker: { symbol: "x-thin-open", size: 8, color: "#c92a2a", line: { width: 1.5 } } });
      layout.xaxis2 = { anchor: "y2", title: { text: "QC-failed sweeps: stimulus (pA)" } };
      layout.yaxis2 = { domain: [0, 0.2] };
    }
    await plot(fiDiv, traces, layout);
  } else message(fiDiv, "empty", "No long-square sweeps: no f-I curve.");
  if (data.sweeps.length) await loadSweep(); else message(sweepDiv, "empty", "No sweeps.");
}

/* ---------------------------------------------------------------- plate */

async function platePage() {
  const fileId = params.get("file_id");
  const data = await getJSON(`api/plates/${fileId}`);
  const p = data.plate;
  document.title = `Neurocyte — ${p.file_name}`;
  main.append(
    el("h2", { id: "plate-title", text: `Plate ${p.file_name}` }),
    el("p", {}, badge(data.attempt.status), ` ${p.lab} · ${p.timepoint} · ${p.plate_type ?? ""} · ${p.n_wells} wells × ${p.n_electrodes} electrodes · ${fmt(p.duration_s)} s · plate ${p.plate_sn ?? "—"} · `,
      el("a", { href: `qc-report/${fileId}`, target: "_blank", id: "qc-report-link", text: "QC report" }),
      " · ", el("a", { href: `api/download/original/${fileId}`, id: "download-original", text: "original file" }),
      " · ", el("a", { href: `api/download/mea_well_metrics.csv?file_id=${fileId}`, id: "download-wells-csv", text: "well metrics CSV" })),
  );
  // plate map: wells coloured by treatment
  const conds = [...new Set(data.wells.map((w) => w.condition).filter(Boolean))];
  const color = (c) => PALETTE[conds.indexOf(c) % PALETTE.length];
  const grid = el("table", { class: "platemap", id: "plate-map" });
  grid.append(el("tr", {}, el("th"), ...data.cols.map((c) => el("th", { text: c }))));
  for (const r of data.rows) {
    const tr = el("tr", {}, el("th", { text: r }));
    for (const c of data.cols) {
      const w = data.wells.find((x) => x.well === `${r}${c}`);
      const td = el("td", { "data-well": `${r}${c}`, title: w ? `${w.condition ?? ""} ${w.dose ?? ""} ${w.dose_units ?? ""}` : "" });
      if (w) {
        td.append(el("b", { text: `${r}${c}` }), el("br"), w.excluded ? el("s", { text: w.condition ?? "" }) : (w.condition ?? ""), w.dose != null ? ` ${w.dose} ${w.dose_units ?? ""}` : "");
        td.style.background = w.excluded ? "#eee" : `${color(w.condition)}33`;
        if (w.excluded) td.title = `excluded: ${w.excluded}`;
      }
      tr.append(td);
    }
    grid.append(tr);
  }
  main.append(el("section", {}, el("h3", { text: "Plate map (treatments; struck through: excluded)" }), grid));
  const metricSel = el("select", { id: "heatmap-metric" });
  for (const m of data.metrics) metricSel.append(el("option", { value: m.key, text: m.label }));
  const heat = chart("chart-plate-heatmap"), divChart = chart("chart-by-div");
  main.append(el("section", {}, el("h3", { text: "Well heatmap" }), el("label", { text: "Metric " }, metricSel), el("div", { class: "row" }, el("div", { class: "col" }, heat), el("div", { class: "col" }, divChart))));
  const wellSel = el("select", { id: "raster-well" }, el("option", { value: "", text: "all wells" }));
  for (const w of data.wells) wellSel.append(el("option", { value: w.well, text: w.well }));
  const start = el("input", { id: "raster-start", type: "number", step: "any", value: "0", size: "6" });
  const stop = el("input", { id: "raster-stop", type: "number", step: "any", value: String(p.duration_s ?? ""), size: "6" });
  const raster = chart("chart-plate-raster");
  raster.style.height = "520px";
  main.append(el("section", {}, el("h3", { text: "Raster with network bursts" }), el("label", { text: "Well " }, wellSel), el("label", { text: "from (s) " }, start), el("label", { text: "to (s) " }, stop), raster));

  async function loadHeat() {
    const req = begin("heat");
    await guarded(heat, async () => {
      const [h, d] = await Promise.all([getJSON(`api/plates/${fileId}/heatmap?metric=${metricSel.value}`, req.signal), getJSON(`api/plates/${fileId}/by-div?metric=${metricSel.value}`, req.signal)]);
      if (!req.current()) throw stale();
      const text = h.z.map((row, i) => row.map((v, j) => `${h.rows[i]}${h.cols[j]}<br>${h.conditions[i][j] ?? ""}`));
      await plot(heat, [{ type: "heatmap", z: h.z, x: h.cols.map(String), y: h.rows, text, colorscale: "Viridis", hovertemplate: "%{text}<br>%{z:.3g}<extra></extra>", xgap: 2, ygap: 2 }], { title: { text: h.label }, xaxis: { type: "category", side: "top" }, yaxis: { type: "category", autorange: "reversed" } });
      heat.dataset.metric = h.metric;
      const traces = d.wells.map((w) => ({ type: "scatter", mode: "lines+markers", name: w.well, legendgroup: w.condition, x: d.timepoints, y: w.value, line: { color: color(w.condition), width: 1 }, hovertemplate: `${w.well} (${w.condition}) %{x}: %{y:.3g}<extra></extra>` }));
      await plot(divChart, traces, { title: { text: `${d.label} by DIV (this plate's recordings)` }, xaxis: { type: "category", categoryorder: "array", categoryarray: d.timepoints }, showlegend: false });
    });
  }
  async function loadRaster() {
    const req = begin("raster");
    await guarded(raster, async () => {
      const q = new URLSearchParams({ max_marks: "20000" });
      if (wellSel.value) q.set("well", wellSel.value);
      if (start.value !== "") q.set("start_s", start.value);
      if (stop.value !== "") q.set("stop_s", stop.value);
      const [r, nb] = await Promise.all([getJSON(`api/plates/${fileId}/raster?${q}`, req.signal), getJSON(`api/plates/${fileId}/network-bursts?${q}`, req.signal)]);
      if (!req.current()) throw stale();
      if (!r.time_s.length) { message(raster, "empty", "No spikes in this window."); return; }
      const wells = Object.entries(r.wells || {});
      const every = Math.max(1, Math.ceil(wells.length / 24));
      const ticks = wells.filter((_, k) => k % every === 0);
      const n = r.n_spikes.toLocaleString("en-US");
      const label = r.decimated ? `decimated: all ${n} spikes as ${r.n_marks.toLocaleString("en-US")} marks, one per electrode per ${(r.bin_s * 1000).toPrecision(3)} ms bin with ≥ 1 spike` : `all ${n} spikes`;
      raster.dataset.decimated = String(!!r.decimated);
      const shapes = (nb.bursts || []).map((b) => {
        const rows = Object.keys(r.wells); const k = rows.indexOf(b.well);
        const y0 = k < 0 ? 0 : r.wells[b.well] - 0.5; const y1 = k < 0 ? 0 : (k + 1 < rows.length ? r.wells[rows[k + 1]] : r.electrodes.length) - 0.5;
        return { type: "rect", xref: "x", yref: "y", x0: b.start_s, x1: b.end_s, y0, y1, fillcolor: "#e8590c", opacity: 0.18, line: { width: 0 }, layer: "below" };
      });
      raster.dataset.networkBursts = String(shapes.length);
      await plot(raster, [{ type: "scatter", mode: "markers", x: r.time_s, y: r.electrode_index, text: r.electrode_index.map((i, k) => `${r.electrodes[i]}${r.decimated ? `, ${r.count[k]} spikes` : ""}`), hovertemplate: "%{text}<br>%{x:.4f} s<extra></extra>", marker: { symbol: "line-ns-open", size: 5, color: "#1f2933", line: { width: 1 } } }], {
        title: { text: `Raster ${wellSel.value || "all wells"}, ${(+r.start_s).toFixed(2)}–${(+r.stop_s).toFixed(2)} s; network bursts shaded (${shapes.length})<br><sup>${label}</sup>` },
        xaxis: { title: { text: "time (s)" }, range: [r.start_s, r.stop_s] },
        yaxis: { title: { text: "well (electrodes)" }, tickmode: "array", tickvals: ticks.map(([, i]) => i), ticktext: ticks.map(([w]) => w), autorange: "reversed", zeroline: false },
        shapes, showlegend: false, margin: { l: 60, r: 20, t: 60, b: 50 },
      });
    });
  }
  metricSel.addEventListener("change", loadHeat);
  for (const x of [wellSel, start, stop]) x.addEventListener("change", loadRaster);
  await Promise.all([loadHeat(), loadRaster()]);
}

/* ---------------------------------------------------------------- upload */

const CHUNK_BYTES = 1024 * 1024;

async function uploadPage() {
  const drop = el("div", { id: "drop-zone", class: "drop", text: "Drop ABF, NWB, .raw/.spk, spike lists and plate maps here, or choose files" });
  const picker = el("input", { id: "file-input", type: "file", multiple: "" });
  const form = el("form", { id: "upload-form", class: "curation" });
  for (const [name, label, req] of [["lab", "Lab", true], ["condition", "Condition", true], ["timepoint", "Timepoint", true], ["subject", "Subject", false], ["species", "Species", false], ["sex", "Sex", false], ["age", "Age (P60D)", false], ["genotype", "Genotype", false], ["strain", "Strain", false], ["notes", "Notes", false]]) {
    form.append(el("label", { text: `${label} ` }, el("input", Object.assign({ name, size: name === "notes" ? "40" : "12" }, req ? { required: "" } : {}))));
  }
  const list = el("table", { class: "data", id: "upload-table" });
  list.append(el("thead", {}, el("tr", {}, ...["File", "Bytes", "Sent", "Stage", "Reason"].map((h) => el("th", { text: h })))), el("tbody"));
  main.append(el("h2", { text: "Upload recordings" }),
    el("p", { class: "hint", text: "Files stream to the landing zone in chunks (1 MiB; 8 MiB parts on S3) and resume after a dropped connection; the form's values become the sidecar. The ingest DAG is then triggered and each file followed: landed → sensed → extracted → QC → published, quarantined or failed, with the reason." }),
    form, drop, picker, list);
  const runNote = el("p", { id: "ingest-run", class: "hint" });
  main.append(runNote);
  // A drop's files (a spike list with its plate map) all land before the DAG is triggered
  // once, with the landed paths: the run reads them at once (they landed whole).
  const handle = async (files) => {
    if (!form.reportValidity()) return;
    const values = new FormData(form);
    const chunkBytes = CHUNK_BYTES;
    const done = await Promise.all([...files].map((f) => uploadOne(f, values, list.tBodies[0], chunkBytes)));
    const landed = done.filter(Boolean);
    if (!landed.length) return;
    const uploaded = landed.map((f) => f.session.destination);
    const trig = await fetch(`${AIRFLOW_API}/dagRuns`, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ logical_date: null, conf: { max_wait_s: 0, uploaded } }) }).catch(() => null);
    const run = trig && trig.ok ? await trig.json().catch(() => null) : null;
    if (run) {
      runNote.dataset.runId = run.dag_run_id;
      runNote.textContent = `Ingest run ${run.dag_run_id} triggered.`;
    } else {
      runNote.dataset.runId = "";
      runNote.textContent = `The ingest DAG was not triggered (${trig ? `HTTP ${trig.status}` : "no answer"}): its next scheduled run picks the files up.`;
    }
    await Promise.all(landed.map((f) => follow(f, run ? run.dag_run_id : null)));
  };
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handle(e.dataTransfer.files); });
  picker.addEventListener("change", () => handle(picker.files));
}

async function uploadOne(file, form, body, chunkBytes) {
  const stage = el("td", { class: "stage", text: "starting" }), sent = el("td", { class: "num", text: "0" }), why = el("td", { class: "reason" });
  const row = el("tr", { "data-file": file.name }, el("td", { text: file.name }), el("td", { class: "num", text: String(file.size) }), sent, stage, why);
  body.append(row);
  const sidecar = {};
  for (const k of ["subject", "species", "sex", "age", "genotype", "strain", "notes"]) if (form.get(k)) sidecar[k] = form.get(k);
  const post = await fetch("api/uploads", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ file_name: file.name, size_bytes: file.size, lab: form.get("lab"), condition: form.get("condition"), timepoint: form.get("timepoint"), sidecar }) });
  const session = await post.json().catch(() => ({}));
  if (!post.ok) { stage.textContent = "refused"; why.textContent = typeof session.detail === "string" ? session.detail : JSON.stringify(session.detail); row.dataset.stage = "refused"; return; }
  let offset = 0, tries = 0, state = session;
  while (offset < file.size) {
    try {
      const size = Math.max(chunkBytes, session.chunk_bytes || 0);  // an S3 landing zone needs >= 5 MiB parts
      const r = await fetch(`api/uploads/${session.upload_id}?offset=${offset}`, { method: "PUT", credentials: "same-origin", body: file.slice(offset, offset + size) });
      state = await r.json();
      if (r.status === 409) state = await getJSON(`api/uploads/${session.upload_id}`);  // resume where the server is
      else if (!r.ok) throw new Error(state.detail || r.statusText);
      offset = state.received_bytes; tries = 0;
      sent.textContent = String(offset);
    } catch (err) {
      if (++tries > 5) { stage.textContent = "upload failed"; why.textContent = err.message; return; }
      await new Promise((res) => setTimeout(res, 1000 * tries));
      try { offset = (await getJSON(`api/uploads/${session.upload_id}`)).received_bytes; } catch (e) { /* retried above */ }
    }
  }
  setStage(row, stage, state.stage);
  return { file, session, stage, why, row };
}

/* Where the file is: its row keeps the current stage and every stage it went through. */
function setStage(row, cell, name) {
  cell.textContent = name; row.dataset.stage = name;
  const key = name.split(":")[0];
  const seen = row.dataset.stages ? row.dataset.stages.split(">") : [];
  if (seen[seen.length - 1] !== key) row.dataset.stages = [...seen, key].join(">");
  cell.title = row.dataset.stages.split(">").join(" → ");
  row.classList.toggle("bad", ["failed", "quarantined", "not ingested", "refused", "upload failed"].includes(key));
}

/* The ingest run's progress from Airflow's REST API (the user's own login): the stage a
 * file of the run has reached before its attempt is in ingest_log. */
const AIRFLOW_API = "../api/v2/dags/neurocyte_ingest";

async function runProgress(runId) {
  const id = encodeURIComponent(runId);
  const run = await getJSON(`${AIRFLOW_API}/dagRuns/${id}`);
  const tis = (await getJSON(`${AIRFLOW_API}/dagRuns/${id}/taskInstances?limit=1000`)).task_instances;
  const states = (task) => tis.filter((t) => t.task_id === task).map((t) => t.state);
  const some = (task, wanted) => states(task).some((s) => wanted.includes(s));
  const every = (task, wanted) => states(task).length > 0 && states(task).every((s) => wanted.includes(s));
  let stage = `landed: queued in ingest run ${runId} (${run.state})`;
  if (some("gate_and_commit", ["running", "success", "up_for_retry"])) stage = "QC: validating and committing";
  else if (every("extract", ["success"])) stage = "extracted";
  else if (some("wait_for_files", ["success"]) || some("wait_for_s3", ["success"])) stage = "sensed: decoding";
  else if (some("wait_for_files", ["skipped"])) stage = "not ingested: the run found no new file";
  return { stage, finished: ["success", "failed"].includes(run.state), state: run.state };
}

/* Follow an uploaded file: landed -> sensed -> extracted -> QC -> published | quarantined |
 * failed (its attempt in ingest_log, with the reason). No stale state: each poll replaces
 * the stage, and a finished run without an attempt says so. */
async function follow({ file, session, stage, why, row }, runId) {
  if (stage.textContent.startsWith("landed: plate map")) return;
  for (;;) {
    let progress = null;
    try { if (runId) progress = await runProgress(runId); } catch (err) { why.textContent = `Airflow run ${runId}: ${err.message}`; }
    const st = await getJSON(`api/uploads/${session.upload_id}`).catch(() => null);
    if (st) {
      if (["published", "quarantined", "failed"].includes(st.stage)) {
        setStage(row, stage, st.stage);
        why.textContent = st.reason || "";
        if (st.file_id && st.stage !== "failed") why.append(" ", el("a", { href: `${/spike_list|\.raw$|\.spk$/i.test(file.name) ? "plate" : "cell"}.html?file_id=${st.file_id}`, text: "open" }), " · ", el("a", { href: `qc-report/${st.file_id}`, target: "_blank", text: "QC report" }));
        return;
      }
      if (progress && progress.finished) {
        setStage(row, stage, "not ingested");
        why.textContent = progress.state === "failed" ? `ingest run ${runId} failed: see its task logs in Airflow` : `ingest run ${runId} ended without an attempt of this file`;
        return;
      }
      if (progress) setStage(row, stage, progress.stage);
      else if (!runId) { setStage(row, stage, st.stage); why.textContent = "waiting for the ingest DAG's next scheduled run"; }
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
}

const page = document.body.dataset.page;
const run = { search: searchPage, cell: cellPage, plate: platePage, upload: uploadPage }[page];
if (!window.Plotly) main.append(el("p", { class: "empty", text: "plotly.js did not load (vendor/plotly.min.js)." }));
else run().catch((err) => { main.append(el("p", { class: "empty", id: "page-error", text: `Could not load: ${err.message}` })); });
