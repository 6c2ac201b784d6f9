// pyro-svae explorer: calls the JSON API under /api/ and draws with plain SVG (no library, no network).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const state = { map: null, selected: [], toPlot: null, labels: null, documents: false };

function $(id) { return document.getElementById(id); }

function svg(tag, attrs, parent) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message ? "error: " + message : "";
  box.hidden = !message;
}

async function api(path, body) {
  const response = await fetch("/api/" + path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw new Error(data.detail || response.statusText);
  const notice = $("notice");
  notice.textContent = (data.warnings || []).join("; ");
  notice.hidden = !notice.textContent;
  return data;
}

function run(task) {
  return async (event) => {
    if (event) event.preventDefault();
    showError("");
    try { await task(); } catch (e) { showError(e.message); }
  };
}

function decoding(form) {
  const get = (name) => form.querySelector(`[name=${name}]`).value;
  const ticked = (name) => form.querySelector(`[name=${name}]`).checked;
  return { strategy: get("strategy"), beam: Number(get("beam")), temperature: Number(get("temperature")),
           top_k: Number(get("top_k")), unk: ticked("unk"), rerank: get("strategy") === "beam" && ticked("rerank"),
           seed: Number(get("seed")) };
}

function fillList(list, texts, endsBold) {
  list.replaceChildren(...texts.map((text, i) => {
    const li = document.createElement("li");
    li.className = "sentence" + (endsBold && (i === 0 || i === texts.length - 1) ? " end" : "");
    li.textContent = text;
    return li;
  }));
}

// -- the map --------------------------------------------------------------------------------
const W = 640, H = 480, PAD = 24;

function scaler(points) {
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (W - 2 * PAD) / ((x1 - x0) || 1), sy = (H - 2 * PAD) / ((y1 - y0) || 1);
  return (p) => [PAD + (p[0] - x0) * sx, H - PAD - (p[1] - y0) * sy];
}

function colour(length, lo, hi) {
  const t = hi > lo ? Math.min(1, Math.max(0, (length - lo) / (hi - lo))) : 0;
  return `hsl(${210 - 180 * t}, ${70 + 15 * t}%, ${55 - 5 * t}%)`;
}

function labelColour(label) {  // a --prior class run: one hue per label
  const k = state.labels.indexOf(label);
  return `hsl(${Math.round(360 * k / state.labels.length)}, 65%, 48%)`;
}

function labelLegend() {
  $("legend").replaceChildren(...state.labels.flatMap((label) => {
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = labelColour(label);
    return [swatch, document.createTextNode(` ${label} `)];
  }));
}

function drawMap() {
  const m = state.map, plot = $("map-plot");
  plot.replaceChildren();
  state.toPlot = scaler(m.points);
  const sorted = [...m.lengths].sort((a, b) => a - b);  // colours span the 5th to 95th percentile
  const lo = sorted[Math.floor(0.05 * (sorted.length - 1))], hi = sorted[Math.ceil(0.95 * (sorted.length - 1))];
  const byLabel = Boolean(state.labels && m.labels);
  if (byLabel) {
    labelLegend();
    $("map-colouring").textContent = "the label q(y|x) predicts";
  }
  m.points.forEach((p, i) => {
    const [x, y] = state.toPlot(p);
    const fill = byLabel ? labelColour(m.labels[i]) : colour(m.lengths[i], lo, hi);
    const dot = svg("circle", { cx: x, cy: y, r: 3.5, class: "point", fill, "data-index": i }, plot);
    svg("title", {}, dot).textContent = m.texts[i];
    dot.addEventListener("mouseenter", () => { $("hover").textContent = m.texts[i]; });
    dot.addEventListener("click", () => select(i, dot));
    if (m.documents) dot.addEventListener("click", () => drawDocument(m.documents[i]));
  });
  svg("g", { id: "path-layer" }, plot);
}

function select(i, dot) {
  state.selected.push({ index: i, dot });
  if (state.selected.length > 2) state.selected.shift().dot.classList.remove("selected");
  dot.classList.add("selected");
  fillList($("selected"), state.selected.map((s) => state.map.texts[s.index]));
  if (state.selected.length === 2) {
    $("first").value = state.map.texts[state.selected[0].index];
    $("second").value = state.map.texts[state.selected[1].index];
  }
}

function drawPath(rows) {
  const layer = $("path-layer");
  if (!layer || !rows.length || rows[0].xy === null) return;
  layer.replaceChildren();
  const pts = rows.map((r) => state.toPlot(r.xy));
  svg("polyline", { points: pts.map((p) => p.join(",")).join(" ") }, layer);
  pts.forEach(([x, y], i) => {
    svg("circle", { cx: x, cy: y, r: 4, class: "path" }, layer);
    svg("text", { x: x + 6, y: y - 6, class: "step" }, layer).textContent = String(i + 1);
  });
}

function drawDocument(d) {  // a --prior chain run: the document of a point, as a path in sentence order
  const m = state.map;
  drawPath(m.points.map((xy, i) => ({ xy, document: m.documents[i] })).filter((r) => r.document === d));
}

// -- the training curves --------------------------------------------------------------------
function chart(rows, key, title) {
  const w = 300, h = 180, pad = 58;
  const pts = rows.filter((r) => r[key] !== null && r[key] !== undefined).map((r) => [r.step, r[key]]);
  const box = svg("svg", { class: "chart", width: w, height: h, viewBox: `0 0 ${w} ${h}` });
  svg("text", { x: pad, y: 16, class: "title" }, box).textContent = title;
  if (!pts.length) return box;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const X = (x) => pad + (x - x0) / ((x1 - x0) || 1) * (w - pad - 10);
  const Y = (y) => h - 22 - (y - y0) / ((y1 - y0) || 1) * (h - 50);
  svg("polyline", { points: pts.map(([x, y]) => `${X(x)},${Y(y)}`).join(" ") }, box);
  pts.forEach(([x, y]) => svg("circle", { cx: X(x), cy: Y(y), r: 2.5, fill: "#2f6fb3" }, box));
  const label = (x, y, text, anchor) => {
    svg("text", { x, y, "text-anchor": anchor || "start" }, box).textContent = text;
  };
  label(pad - 4, Y(y1) + 4, short(y1), "end");
  if (y1 !== y0) label(pad - 4, Y(y0) + 4, short(y0), "end");
  label(X(x0), h - 6, "step " + x0);
  label(X(x1), h - 6, String(x1), "end");
  return box;
}

function short(v) {
  const a = Math.abs(v);
  return a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : a === 0 ? "0" : v.toPrecision(2);
}

async function loadTraining() {
  const data = await api("metrics");
  const charts = [["val_elbo", "validation ELBO"], ["val_rec", "reconstruction (nats)"], ["val_kl", "KL (nats)"],
                  ["val_bleu", "reconstruction BLEU (validation sample)"], ["val_mi", "I(x;z) (--aggressive)"],
                  ["beta", "KL weight beta"],
                  ["lr", "learning rate"], ["train_loss", "training loss"]]
    // runs before val_bleu lack it; val_mi is --aggressive's
    .filter(([key]) => (data.rows.length === 0 ? key !== "val_mi" : key in data.rows[0]));
  $("charts").replaceChildren(...charts.map(([key, title]) => chart(data.rows, key, title)));
  $("config").replaceChildren(...Object.entries(data.config).map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.innerHTML = "<td></td><td></td>";
    tr.children[0].textContent = k;
    tr.children[1].textContent = JSON.stringify(v);
    return tr;
  }));
}

// -- wiring ---------------------------------------------------------------------------------
function openTab(name) {
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === name));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
}

async function start() {
  document.querySelectorAll(".decoding").forEach((slot) => {
    slot.replaceWith($("decoding-template").content.cloneNode(true));
  });
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => openTab(t.dataset.tab)));
  openTab("map");

  $("homotopy-form").addEventListener("submit", run(async () => {
    const form = $("homotopy-form");
    const data = await api("homotopy", { first: $("first").value, second: $("second").value,
                                         steps: Number($("steps").value), ...decoding(form) });
    fillList($("homotopy-out"), data.path.map((r) => r.text), true);
    drawPath(data.path);
  }));
  $("posterior-form").addEventListener("submit", run(async () => {
    const form = $("posterior-form");
    const data = await api("posterior", { sentence: $("sentence").value, n: Number($("posterior-n").value),
                                          ...decoding(form) });
    const label = data.label === undefined ? "" :
      `   ·   label ${data.label} (q(y|x) = ${data.probabilities[data.label].toFixed(3)})`;
    $("posterior-summary").textContent =
      `reconstruction (posterior mean): ${data.reconstruction.text}   ·   BLEU ${data.bleu.toFixed(2)}   ·   ` +
      `KL(q ‖ p) = ${data.kl.toFixed(2)} nats` + label;
    fillList($("posterior-out"), data.samples.map((r) => r.text));
  }));
  $("sample-form").addEventListener("submit", run(async () => {
    const label = state.labels ? $("sample-label").value : "";
    const data = await api("sample", { n: Number($("sample-n").value), ...decoding($("sample-form")),
                                       ...(label ? { label } : {}) });
    fillList($("sample-out"), data.samples.map((r) => r.text));
    if (state.documents) drawPath(data.samples);  // one document: its path on the map
  }));

  await run(async () => {
    const info = await api("info");
    const c = info.config;
    $("run-info").textContent = `${info.run} · ${c.model} · z ${info.z_dim} · guide ${c.guide} · ` +
      `vocabulary ${info.vocab_size} · decoder ${c.hidden} units`;
    $("map-split").textContent = info.split;
    state.documents = Boolean(info.documents);
    if (info.labels) {  // a --prior class run: a label control on the prior tab, the map coloured by label
      state.labels = info.labels;
      $("sample-label").append(...info.labels.map((label) => new Option(label, label)));
      $("sample-label-box").hidden = false;
    }
    if (info.z_dim > 0) {
      state.map = await api("map");
      $("map-method").textContent = state.map.method === "umap" ? "by UMAP" : "on their two principal directions (PCA)";
      drawMap();
    }
  })();
  await run(loadTraining)();
  document.body.dataset.ready = "yes";
}

document.addEventListener("DOMContentLoaded", start);
