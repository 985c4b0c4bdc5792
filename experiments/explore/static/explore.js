// convnet explorer: the page. Plain JavaScript, no libraries, no build step.
// Every number shown is computed by the server (experiments/explore/core.py) with convnet's own model;
// this file only draws them. Arrays arrive as {shape, data: base64 float32, min, max}.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

// One id per tab: two tabs are two independent sessions (each its own copy of the model).
const SESSION = (() => {
  let s = sessionStorage.getItem("explorer-session");
  if (!s || !/^[0-9a-f]{32}$/.test(s)) {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    s = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    sessionStorage.setItem("explorer-session", s);
  }
  return s;
})();

const state = {
  info: null, pixels: null, source: "", prediction: null, probabilities: null,
  layers: null, target: null, targetPinned: false, label: null, labelPinned: false,
  tab: "forward", unit: null, unitRF: null, mnistKind: "all", mnistOffset: 0, trainTimer: null,
  sources: {}, weights: null, weightsStale: true,
};

// ------------------------------------------------------------------ API
// body[data-busy] is "1" while any request or drawing update is under way, "0" when the page has settled
// (what the browser tests wait for).
let inFlight = 0;
function busy(delta) {
  inFlight += delta;
  document.body.dataset.busy = inFlight > 0 ? "1" : "0";
}

async function api(path, body, opts = {}) {
  busy(+1);
  try { return await request(path, body, opts); } finally { busy(-1); }
}

async function request(path, body, opts) {
  const init = { method: body === undefined ? "GET" : "POST", headers: { "X-Explorer-Session": SESSION } };
  if (body instanceof Blob) {
    init.body = body;
    // an image type, or raw bytes: the server refuses "simple" types such as text/plain (cross-site posts)
    init.headers["Content-Type"] = body.type.startsWith("image/") ? body.type : "application/octet-stream";
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, init);
  let data;
  try { data = await res.json(); } catch (e) { data = { error: `${res.status} ${res.statusText}` }; }
  if (!res.ok) {
    const err = new Error(data.error || `${res.status}`);
    err.status = res.status;
    throw err;
  }
  if (data.new_session && state.info && !opts.quiet) note("(a new session: this page's model copy was restored from the file)");
  if (!opts.keepError) showError(null);
  return data;
}

function showError(message) {
  const box = $("#error");
  box.hidden = !message;
  box.textContent = message || "";
}
function note(message) { $("#input-source").textContent = message; }

function decode(enc) {
  const bin = atob(enc.data);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return { shape: enc.shape, data: new Float32Array(bytes.buffer), min: enc.min, max: enc.max };
}

const fmt = (v) => {
  if (v === null || v === undefined || Number.isNaN(v)) return "n/a";
  const a = Math.abs(v);
  // a non-breaking hyphen in the exponent: "3.374e-5" never wraps as "3.374e-" / "5"
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(3).replace("e-", "e\u2011");
  return v.toFixed(4);
};

// ------------------------------------------------------------------ colours
// Non-negative arrays (ReLU outputs, pixels): a dark-to-bright scale from 0 to the max.
// Signed arrays (gradients, weights): blue below zero, white at zero, red above, symmetric.
const SEQ = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]];
function seqColour(t) {
  t = Math.min(1, Math.max(0, t)) * (SEQ.length - 1);
  const i = Math.min(SEQ.length - 2, Math.floor(t)), f = t - i;
  return SEQ[i].map((c, k) => Math.round(c + f * (SEQ[i + 1][k] - c)));
}
function divColour(t) {          // t in [-1, 1]
  t = Math.min(1, Math.max(-1, t));
  if (t >= 0) return [255, Math.round(255 * (1 - t) + 40 * t), Math.round(255 * (1 - t) + 40 * t)];
  const s = -t;
  return [Math.round(255 * (1 - s) + 40 * s), Math.round(255 * (1 - s) + 90 * s), 255];
}
// A scale for a set of values: {kind, lo, hi, colour(v)}. Bars stand on white: their scale stops short of
// the palette's pale yellow end (and starts above its black), so the tallest bar is the most visible one.
function scaleFor(min, max, forceSigned = false, onWhite = false) {
  if (!forceSigned && min >= 0) {
    const hi = max > 0 ? max : 1;
    const colour = onWhite ? (v) => seqColour(0.15 + 0.62 * Math.min(1, Math.max(0, v / hi))) : (v) => seqColour(v / hi);
    return { kind: "seq", lo: 0, hi, colour };
  }
  const m = Math.max(Math.abs(min), Math.abs(max)) || 1;
  return { kind: "div", lo: -m, hi: m, colour: (v) => divColour(v / m) };
}
function legend(scale, label = "") {
  const c = el("canvas", { width: 120, height: 1 });
  const ctx = c.getContext("2d"), img = ctx.createImageData(120, 1);
  for (let x = 0; x < 120; x++) {
    const [r, g, b] = scale.colour(scale.lo + (x / 119) * (scale.hi - scale.lo));
    img.data.set([r, g, b, 255], x * 4);
  }
  ctx.putImageData(img, 0, 0);
  return el("span", { class: "legend", title: "colour scale of this view" },
    label ? `${label} ` : "", fmt(scale.lo), c, fmt(scale.hi));
}

// A (H, W) slice as an image: get(r, c) gives the value.
function paintMap(canvas, H, W, get, scale) {
  canvas.width = W; canvas.height = H;
  const ctx = canvas.getContext("2d"), img = ctx.createImageData(W, H);
  for (let r = 0; r < H; r++) for (let c = 0; c < W; c++) {
    const [R, G, B] = scale.colour(get(r, c));
    img.data.set([R, G, B, 255], (r * W + c) * 4);
  }
  ctx.putImageData(img, 0, 0);
}

// ------------------------------------------------------------------ tooltips
const tip = $("#tooltip");
function hoverable(canvas, describe) {
  canvas.addEventListener("mousemove", (ev) => {
    const text = describe(ev);
    if (text === null) { tip.hidden = true; return; }
    tip.textContent = text;
    tip.hidden = false;
    tip.style.left = `${ev.clientX + 12}px`;
    tip.style.top = `${ev.clientY + 12}px`;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
}
function cellAt(ev, canvas, rows, cols) {
  const rect = canvas.getBoundingClientRect();
  const c = Math.floor(((ev.clientX - rect.left) / rect.width) * cols);
  const r = Math.floor(((ev.clientY - rect.top) / rect.height) * rows);
  return [Math.min(rows - 1, Math.max(0, r)), Math.min(cols - 1, Math.max(0, c))];
}

// Feature maps of an (H, W, C) array: one small canvas per channel, one colour scale for all.
function featureMaps(arr, scale, name, onClick, px = 72, onHover = null) {
  const [H, W, C] = arr.shape, d = arr.data;
  const box = el("div", { class: "maps" });
  const size = Math.max(2, Math.round(px / Math.max(H, W)));
  for (let ch = 0; ch < C; ch++) {
    const cv = el("canvas", { class: "map", "data-channel": ch, title: `${name} channel ${ch}` });
    paintMap(cv, H, W, (r, c) => d[(r * W + c) * C + ch], scale);
    cv.style.width = `${W * size}px`; cv.style.height = `${H * size}px`;
    hoverable(cv, (ev) => {
      const [r, c] = cellAt(ev, cv, H, W);
      if (onHover) onHover([r, c, ch]);
      return `${name} channel ${ch}, (${r}, ${c}): ${fmt(d[(r * W + c) * C + ch])}`;
    });
    if (onHover) cv.addEventListener("mouseleave", () => onHover(null));
    if (onClick) cv.addEventListener("click", (ev) => { const [r, c] = cellAt(ev, cv, H, W); onClick([r, c, ch]); });
    box.append(C > 1 ? el("figure", { class: "fm" }, cv, el("figcaption", { text: String(ch) })) : cv);
  }
  return box;
}

// Bars of a flat array (dense layers, biases); labels under short ones.
function bars(arr, scale, name, onClick, labels = null, extra = null) {
  const n = arr.data.length, d = arr.data;
  const bw = n <= 16 ? 26 : n <= 64 ? 6 : n <= 256 ? 3 : 2, h = 70;
  const cv = el("canvas", { class: "bars", width: n * bw, height: h + (labels ? 14 : 0) });
  const ctx = cv.getContext("2d");
  const m = Math.max(Math.abs(scale.lo), Math.abs(scale.hi)) || 1;
  const zero = scale.kind === "seq" ? h : h / 2;
  for (let i = 0; i < n; i++) {
    const [R, G, B] = scale.colour(d[i]);
    ctx.fillStyle = `rgb(${R},${G},${B})`;
    const len = (scale.kind === "seq" ? h : h / 2) * Math.min(1, Math.abs(d[i]) / m);
    const y = d[i] >= 0 ? zero - len : zero;
    ctx.fillRect(i * bw, y, Math.max(1, bw - 1), Math.max(1, len));
    if (labels) { ctx.fillStyle = "#333"; ctx.font = "11px sans-serif"; ctx.fillText(String(labels[i]), i * bw + bw / 2 - 3, h + 12); }
  }
  ctx.strokeStyle = "#999"; ctx.beginPath(); ctx.moveTo(0, zero); ctx.lineTo(n * bw, zero); ctx.stroke();
  hoverable(cv, (ev) => {
    const rect = cv.getBoundingClientRect();
    const i = Math.min(n - 1, Math.floor(((ev.clientX - rect.left) / rect.width) * n));
    return `${name} [${i}]: ${fmt(d[i])}` + (extra ? `;  ${extra.name} = ${fmt(extra.arr.data[i])}` : "");
  });
  if (onClick) cv.addEventListener("click", (ev) => {
    const rect = cv.getBoundingClientRect();
    onClick([Math.min(n - 1, Math.floor(((ev.clientX - rect.left) / rect.width) * n))]);
  });
  return cv;
}

// Any array as a picture: (H, W, C) -> maps, (n) -> bars, (kh, kw, C, F) -> a mosaic, (in, out) -> an image.
// ``extra`` ({name, arr} of the same shape): shown beside each value under the mouse (a weight beside its gradient).
function arrayView(arr, scale, name, onClick, extra = null) {
  const s = arr.shape;
  if (s.length === 3) return featureMaps(arr, scale, name, onClick);
  if (s.length === 1) return bars(arr, scale, name, onClick, s[0] <= 10 ? [...Array(s[0]).keys()] : null, extra);
  if (s.length === 4) return kernelMosaic(arr, scale, name, 3, extra);
  if (s.length === 2) return matrixImage(arr, scale, name, extra);
  return el("span", { text: `(${s.join(", ")})` });
}

// Conv kernels (kh, kw, C, F): row = input channel, column = filter, a 1-pixel gap between kernels;
// with one input channel the filters are laid out in rows of 8.
function kernelMosaic(arr, scale, name, px = 3, extra = null) {
  const [kh, kw, C, F] = arr.shape, d = arr.data;
  const perRow = C === 1 ? Math.min(F, 8) : F, rows = C === 1 ? Math.ceil(F / perRow) : C;
  const W = perRow * (kw + 1) - 1, H = rows * (kh + 1) - 1;
  const at = (r, c) => {                 // [i, j, channel, filter] under canvas pixel (r, c), or null in a gap
    const i = r % (kh + 1), j = c % (kw + 1), tr = Math.floor(r / (kh + 1)), tc = Math.floor(c / (kw + 1));
    const ci = C === 1 ? 0 : tr, f = C === 1 ? tr * perRow + tc : tc;
    return i === kh || j === kw || f >= F ? null : [i, j, ci, f];
  };
  const cv = el("canvas", { class: "mosaic" });
  paintMap(cv, H, W, (r, c) => {
    const k = at(r, c);
    if (!k) return scale.kind === "seq" ? scale.lo : 0;
    return d[((k[0] * kw + k[1]) * C + k[2]) * F + k[3]];
  }, scale);
  const zoom = Math.max(1, Math.min(px * 4, Math.floor(480 / W)));
  cv.style.width = `${W * zoom}px`; cv.style.height = `${H * zoom}px`;
  hoverable(cv, (ev) => {
    const [r, c] = cellAt(ev, cv, H, W);
    const k = at(r, c);
    if (!k) return null;
    const at4 = ((k[0] * kw + k[1]) * C + k[2]) * F + k[3];
    return `${name}[${k.join(", ")}] (filter ${k[3]}, input channel ${k[2]}): ${fmt(d[at4])}` +
      (extra ? `;  ${extra.name} = ${fmt(extra.arr.data[at4])}` : "");
  });
  return cv;
}

function matrixImage(arr, scale, name, extra = null) {
  const [R, C] = arr.shape, d = arr.data;
  const cv = el("canvas", { class: "mosaic" });
  paintMap(cv, R, C, (r, c) => d[r * C + c], scale);
  const zx = Math.max(1, Math.floor(256 / C)), zy = Math.max(0.25, Math.min(zx, 256 / R));
  cv.style.width = `${C * zx}px`; cv.style.height = `${Math.round(R * zy)}px`;
  hoverable(cv, (ev) => {
    const [r, c] = cellAt(ev, cv, R, C);
    return `${name}[${r}, ${c}] (input ${r} -> unit ${c}): ${fmt(d[r * C + c])}` +
      (extra ? `;  ${extra.name} = ${fmt(extra.arr.data[r * C + c])}` : "");
  });
  return cv;
}

// ------------------------------------------------------------------ drawing
const draw = $("#draw"), dctx = draw.getContext("2d");
function clearCanvas() {
  dctx.fillStyle = "#000";
  dctx.fillRect(0, 0, draw.width, draw.height);
}
clearCanvas();
let drawing = false, last = null;
function pos(ev) {
  const r = draw.getBoundingClientRect();
  return [((ev.clientX - r.left) / r.width) * draw.width, ((ev.clientY - r.top) / r.height) * draw.height];
}
draw.addEventListener("pointerdown", (ev) => {
  drawing = true; last = pos(ev);
  draw.setPointerCapture(ev.pointerId);
  stroke(last, last);
});
draw.addEventListener("pointermove", (ev) => {
  if (!drawing) return;
  const p = pos(ev);
  stroke(last, p);
  last = p;
});
const endStroke = () => { if (drawing) { drawing = false; scheduleDrawUpdate(); } };
draw.addEventListener("pointerup", endStroke);
draw.addEventListener("pointercancel", endStroke);
function stroke(a, b) {
  dctx.strokeStyle = "#fff"; dctx.lineWidth = 20; dctx.lineCap = "round"; dctx.lineJoin = "round";
  dctx.beginPath(); dctx.moveTo(a[0], a[1]); dctx.lineTo(b[0], b[1]); dctx.stroke();
  scheduleDrawUpdate();
}

// While drawing, at most one request is in flight; the latest canvas is sent when it returns.
let drawBusy = false, drawDirty = false;
function scheduleDrawUpdate() {
  if (drawBusy) { drawDirty = true; return; }
  drawBusy = true; drawDirty = false;
  busy(+1);
  draw.toBlob(async (blob) => {
    try {
      const prepared = await api("/api/prepare/drawing", blob);
      if (prepared.pixels === null) $("#draw-hint").textContent = "No digit yet: draw a stroke.";
      else await setInput(prepared.pixels, "your drawing", drawing);
    } catch (e) {
      if (e.status === 422) { $("#draw-hint").textContent = "No digit yet: draw a stroke."; }
      else showError(e.message);
    } finally {
      drawBusy = false;
      if (drawDirty) scheduleDrawUpdate();
      busy(-1);
    }
  }, "image/png");
}

$("#clear").addEventListener("click", () => {
  clearCanvas();
  state.pixels = null; state.prediction = null; state.layers = null; state.unit = null; state.unitRF = null;
  state.targetPinned = false; state.labelPinned = false;
  $("#prediction").textContent = "–";
  renderProbabilities(null);
  paintInput(null);
  $("#forward-layers").replaceChildren();
  $("#backward-layers").replaceChildren();
  $("#step-result").replaceChildren();
  $("#gradcheck").replaceChildren();
  note("");
});

$("#upload").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  ev.target.value = "";
  if (!file) return;
  try {
    const prepared = await api("/api/prepare", file);
    showOnCanvas(prepared.pixels);
    await setInput(prepared.pixels, `uploaded: ${file.name}`);
  } catch (e) { showError(`${file.name}: ${e.message}`); }
});

// Put a 28x28 image on the drawing canvas (blown up), so one can draw on top of it.
function showOnCanvas(pixels) {
  const small = document.createElement("canvas");
  small.width = 28; small.height = 28;
  const sctx = small.getContext("2d"), img = sctx.createImageData(28, 28);
  for (let r = 0; r < 28; r++) for (let c = 0; c < 28; c++) {
    const v = Math.round(255 * pixels[r][c]);
    img.data.set([v, v, v, 255], (r * 28 + c) * 4);
  }
  sctx.putImageData(img, 0, 0);
  clearCanvas();
  dctx.imageSmoothingEnabled = false;
  dctx.drawImage(small, 0, 0, draw.width, draw.height);
}

function paintInput(pixels) {
  const cv = $("#input28"), ctx = cv.getContext("2d");
  const img = ctx.createImageData(28, 28);
  for (let r = 0; r < 28; r++) for (let c = 0; c < 28; c++) {
    const v = pixels ? Math.round(255 * pixels[r][c]) : 0;
    img.data.set([v, v, v, 255], (r * 28 + c) * 4);
  }
  ctx.putImageData(img, 0, 0);
  showReceptiveField(null);
}

function showReceptiveField(rf) {
  const cv = $("#rf-overlay"), ctx = cv.getContext("2d");
  ctx.clearRect(0, 0, 28, 28);
  if (!rf) return;
  ctx.fillStyle = "rgba(255, 160, 0, 0.35)";
  ctx.fillRect(rf.left, rf.top, rf.right - rf.left + 1, rf.bottom - rf.top + 1);
}

// ------------------------------------------------------------------ the input and its prediction
async function setInput(pixels, source, light = false) {
  state.pixels = pixels;
  state.source = source;
  $("#draw-hint").textContent = "Draw with the mouse, a pen or a finger; the prediction follows as you draw.";
  paintInput(pixels);
  note(`input: ${source}`);
  if (light) await quickPredict();
  else await refresh();
}

// In the middle of a stroke only the prediction is updated (a small reply, redrawn at once);
// the layer views follow when the stroke ends.
async function quickPredict() {
  const t0 = performance.now();
  const res = await api("/api/predict", { pixels: state.pixels });
  $("#prediction").textContent = String(res.prediction);
  renderProbabilities(res.probabilities);
  $("#predict-timing").textContent = `round trip ${(performance.now() - t0).toFixed(1)} ms (server ${res.server_ms.toFixed(1)} ms)`;
}

async function refresh() {
  if (!state.pixels) return;
  const t0 = performance.now();
  const res = await api("/api/predict", { pixels: state.pixels, layers: true });
  const ms = performance.now() - t0;
  await loadWeights();
  state.prediction = res.prediction;
  state.probabilities = res.probabilities;
  state.layers = res.layers;
  $("#prediction").textContent = String(res.prediction);
  renderProbabilities(res.probabilities);
  $("#predict-timing").textContent = `round trip ${ms.toFixed(1)} ms (server ${res.server_ms.toFixed(1)} ms)`;
  if (!state.targetPinned) state.target = res.prediction;
  if (!state.labelPinned) state.label = res.prediction;
  renderClassButtons();
  renderForward();
  if (state.unit) showUnit(state.unit.layer, state.unit.position);
  if (state.tab === "backward") await refreshBackward();
  if (state.tab === "step") $("#step-result").replaceChildren();
}

function renderProbabilities(probs) {
  const box = $("#probabilities");
  box.replaceChildren();
  const best = probs ? probs.indexOf(Math.max(...probs)) : -1;
  for (let d = 0; d < 10; d++) {
    const p = probs ? probs[d] : 0;
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    box.append(el("div", { class: `prob${d === best ? " best" : ""}`, "data-class": d },
      el("span", { text: String(d) }), el("div", { class: "track" }, fill),
      el("span", { class: "pct", text: probs ? `${(100 * p).toFixed(1)}%` : "" })));
  }
}

// ------------------------------------------------------------------ forward view
function layerInfo(i) { return state.info.layers[i]; }
function shapeText(s) { return s.join("×"); }

function renderForward() {
  const box = $("#forward-layers");
  box.replaceChildren();
  if (!state.layers) return;
  const input = { shape: [28, 28, 1], data: Float32Array.from(state.pixels.flat()), min: 0, max: 1 };
  const inScale = scaleFor(0, 1);
  box.append(el("div", { class: "layer", id: "layer-input" },
    el("div", { class: "layer-head" }, el("b", { text: "input" }), el("span", { class: "meta", text: "28×28×1, ink bright" }),
      legend(inScale)),
    featureMaps(input, inScale, "input", null, 112)));
  state.layers.forEach((l, i) => {
    const arr = decode(l.output), info = layerInfo(i);
    const flat = arr.shape.length !== 3;
    const scale = scaleFor(arr.min, arr.max, false, flat);
    let meta = `${shapeText(info.output_shape)}`;
    if (info.window) meta += `, ${info.window.size.join("×")} window, stride ${info.window.strides[0]}`;
    if (info.params.kernel) meta += `, kernel ${shapeText(info.params.kernel)}`;
    if (info.type !== "Dropout" && info.type !== "Flatten" && info.type !== "MaxPool2D") meta += `, ${info.activation}`;
    if (info.type === "Dropout") meta += ` (rate ${info.rate}; off at inference: output = input)`;
    const onClick = (position) => showUnit(i, position);
    const thumb = rfThumb();
    const onHover = (position) => {
      const rf = position ? receptiveField(i, position) : state.unitRF;
      showReceptiveField(rf);
      paintRF(thumb, position ? rf : null);
    };
    let view;
    if (!flat) view = featureMaps(arr, scale, l.name, onClick, 72, onHover);
    else view = bars(arr, scale, l.name, onClick, arr.shape[0] <= 10 ? [...Array(arr.shape[0]).keys()] : null);
    if (!flat) paintRF(thumb, null);
    const body = el("div", { class: "layer-body" },
      el("div", { class: "layer-arrays" }, view, weightsView(i)),
      el("div", { class: "layer-code" }, el("div", { class: "formula", text: formulas(info).forward }),
        codeBlock(info.code.filter((c) => c.pass === "forward"), false)));
    box.append(el("div", { class: "layer", id: `layer-${l.name}`, "data-layer": i },
      el("div", { class: "layer-head" }, flat ? "" : thumb, el("b", { text: `${l.name} (${l.type})` }),
        el("span", { class: "meta", text: meta }), legend(scale)), body));
  });
}

// The weights of layer i of the page's model (fetched once per change of the model), hover for each value.
function weightsView(i) {
  const w = state.weights && state.weights.layers[i];
  if (!w || !Object.keys(w.params).length) return "";
  const parts = Object.entries(w.params).map(([k, enc]) => {
    const a = decode(enc), sc = scaleFor(a.min, a.max, true);
    return el("div", { class: "param-value" }, el("div", { class: "sub" }, `${k} ${shapeText(a.shape)} `, legend(sc)),
      arrayView(a, sc, `${w.name} ${k}`));
  });
  return el("details", { class: "weights", open: "" }, el("summary", { text: "the layer's weights (hover for values)" }),
    el("div", { class: "grads" }, ...parts));
}

async function loadWeights() {
  if (!state.weightsStale) return;
  state.weights = await api("/api/weights", undefined, { quiet: true });
  state.weightsStale = false;
}

// A small copy of the 28x28 input with a receptive field shaded: beside each layer and in the unit panel,
// so the field is in view next to the unit being looked at.
function rfThumb() { return el("canvas", { class: "rf-thumb", width: 28, height: 28, title: "receptive field on the input" }); }
function paintRF(cv, rf) {
  const ctx = cv.getContext("2d"), img = ctx.createImageData(28, 28);
  for (let r = 0; r < 28; r++) for (let c = 0; c < 28; c++) {
    const v = state.pixels ? Math.round(255 * state.pixels[r][c]) : 0;
    img.data.set([v, v, v, 255], (r * 28 + c) * 4);
  }
  ctx.putImageData(img, 0, 0);
  if (!rf) return;
  ctx.fillStyle = "rgba(255, 160, 0, 0.55)";
  ctx.fillRect(rf.left, rf.top, rf.right - rf.left + 1, rf.bottom - rf.top + 1);
}

// ------------------------------------------------------------------ formulas and code
function formulas(info) {
  const s = info.window ? info.window.strides[0] : 1, k = info.window ? info.window.size.join("×") : "";
  let fwd = "", bwd = "";
  switch (info.type) {
    case "Conv2D":
      fwd = `z[i,j,f] = b[f] + Σ_{u,v,c} x[${s}i+u, ${s}j+v, c] · K[u,v,c,f]   (${k} window, K ${shapeText(info.params.kernel)})`;
      bwd = `dL/dK[u,v,c,f] = Σ_{i,j} x[${s}i+u, ${s}j+v, c] · dL/dz[i,j,f]\ndL/db[f] = Σ_{i,j} dL/dz[i,j,f]\n` +
        `dL/dx[p,q,c] = Σ over the windows (i,j) covering (p,q): dL/dz[i,j,f] · K[p-${s}i, q-${s}j, c, f]`;
      break;
    case "MaxPool2D":
      fwd = `y[i,j,c] = max over the ${k} window of x[${s}i+u, ${s}j+v, c]`;
      bwd = "dL/dx = dL/dy at the winner of each window, 0 at every other pixel";
      break;
    case "Dense":
      fwd = `z[j] = b[j] + Σ_i x[i] · W[i,j]   (W ${shapeText(info.params.kernel)})`;
      bwd = "dL/dW[i,j] = x[i] · dL/dz[j]\ndL/db[j] = dL/dz[j]\ndL/dx[i] = Σ_j W[i,j] · dL/dz[j]";
      break;
    case "Flatten":
      fwd = "y[(h·W + w)·C + c] = x[h, w, c]   (row-major: nothing is computed)";
      bwd = "dL/dx = dL/dy reshaped back to (H, W, C)";
      break;
    case "Dropout":
      fwd = `y = x at inference (in training y = x · keep / (1 - ${info.rate}))`;
      bwd = "dL/dx = dL/dy at inference (in training dL/dy · keep / (1 - rate))";
      break;
    default:
      fwd = `y = ${info.type}(x)`; bwd = "dL/dx from dL/dy";
  }
  if (info.activation === "relu") {
    fwd += "\ny = max(z, 0)";
    bwd = "dL/dz = dL/dy · [y > 0]   (the ReLU gate: nothing flows through a dark unit)\n" + bwd;
  } else if (info.activation === "softmax") {
    fwd += "\np = softmax(z): p[j] = exp(z[j]) / Σ_k exp(z[k])";
    bwd = "dL/dz = p - onehot(target)   (softmax and the cross-entropy L = -log p[target], fused)\n" + bwd;
  }
  return { forward: fwd, backward: bwd };
}

async function loadSources() {
  for (const name of Object.keys(state.info.source_files)) {
    if (!state.sources[name]) state.sources[name] = await api(`/api/source?file=${encodeURIComponent(name)}`, undefined, { quiet: true });
  }
}

// Excerpts of the textbook source: file, line numbers, the statements that ran highlighted.
function codeBlock(refs, open = true) {
  if (!refs || !refs.length) return "";
  const wrap = el("details", { class: "code" }, el("summary", {},
    "the code: ", ...refs.map((r, k) => el("code", { text: `${k ? ", " : ""}${r.qualname}` }))));
  if (open) wrap.setAttribute("open", "");
  for (const r of refs) {
    const src = state.sources[r.file];
    const head = el("div", { class: "code-head" }, el("b", { text: `${src ? src.path : r.file}, lines ${r.start}-${r.end}` }), ` ${r.what}`);
    const pre = el("pre", { class: "source", "data-file": r.file, "data-start": r.start });
    const hl = (n) => r.highlight.some(([a, b]) => a <= n && n <= b);
    for (let n = r.start; n <= r.end; n++) {
      const text = src ? src.lines[n - 1] : "";
      pre.append(el("span", { class: `line${hl(n) ? " hl" : ""}` }, el("span", { class: "ln", text: String(n) }), el("span", { text: text })));
    }
    wrap.append(head, pre);
  }
  return wrap;
}

function renderChain() {
  for (const [id, pass] of [["#forward-chain", "forward"], ["#backward-chain", "backward"]]) {
    const d = $(id);
    const block = codeBlock(state.info.chain_code.filter((c) => c.pass === pass));
    d.querySelectorAll(".code").forEach((n) => n.remove());
    if (block) d.append(block);
  }
}

// The input pixels a feature-map unit depends on, walking down through the window layers
// (the same rule as the server's core.receptive_field, for hovering without a request).
function receptiveField(layerIndex, pos) {
  let rows = [pos[0], pos[0]], cols = [pos[1], pos[1]];
  for (let i = layerIndex; i >= 0; i--) {
    const w = state.info.layers[i].window;
    if (w) {
      rows = [rows[0] * w.strides[0] - w.padding[0], rows[1] * w.strides[0] - w.padding[0] + w.size[0] - 1];
      cols = [cols[0] * w.strides[1] - w.padding[1], cols[1] * w.strides[1] - w.padding[1] + w.size[1] - 1];
    }
  }
  return { top: Math.max(rows[0], 0), bottom: Math.min(rows[1], 27), left: Math.max(cols[0], 0), right: Math.min(cols[1], 27) };
}

async function showUnit(layer, position) {
  if (!state.pixels) return;
  try {
    const u = await api("/api/unit", { pixels: state.pixels, layer, position });
    state.unit = { layer, position };
    renderUnit(u);
    state.unitRF = u.receptive_field;
    showReceptiveField(u.receptive_field);
  } catch (e) { showError(e.message); }
}

function numTable(arr2d, cls = "", win = null) {
  const t = el("table", { class: `grid ${cls}` });
  arr2d.forEach((row, r) => t.append(el("tr", {}, ...row.map((v, c) =>
    el("td", { class: win && win[0] === r && win[1] === c ? "win" : "", text: fmt(v) })))));
  return t;
}

function renderUnit(u) {
  const box = $("#unit");
  box.replaceChildren();
  const where = u.position.length === 3 ? `row ${u.position[0]}, column ${u.position[1]}, channel ${u.position[2]}`
    : `unit ${u.position[0]}`;
  box.append(el("h3", { text: `${u.layer} (${u.type}): ${where}` }));
  box.append(el("p", { class: "sub", text: `value ${fmt(u.value)}` }));
  const rf = u.receptive_field;
  const thumb = rfThumb();
  thumb.id = "unit-rf";
  paintRF(thumb, rf.whole ? null : rf);
  box.append(el("div", { class: "row" }, thumb, el("p", { class: "hint", text: rf.whole ? "Receptive field: the whole input (a dense layer sees every pixel)."
    : `Receptive field: input rows ${rf.top}-${rf.bottom}, columns ${rf.left}-${rf.right} (shaded on the 28×28 input).` })));
  if (u.kind === "dot" && u.type === "Conv2D") {
    const ins = decode(u.inputs), ws = decode(u.weights), ps = decode(u.products);
    const [kh, kw, C] = ins.shape;
    const slice = (a, ch) => [...Array(kh).keys()].map((i) => [...Array(kw).keys()].map((j) => a.data[(i * kw + j) * C + ch]));
    const order = [...Array(C).keys()].sort((a, b) => Math.abs(u.channel_sums[b]) - Math.abs(u.channel_sums[a]));
    const shown = order.slice(0, Math.min(C, 3));
    box.append(el("p", { class: "hint", text: `z = bias + Σ over the ${kh}×${kw}×${C} window of input × weight. ` +
      (C > 1 ? `The ${shown.length} input channels contributing most are shown; every channel's share is in the bars.` : "") }));
    for (const ch of shown) {
      box.append(el("div", { class: "sub", text: `input channel ${ch}: contributes ${fmt(u.channel_sums[ch])}` }));
      box.append(el("div", { class: "row" },
        el("div", {}, el("div", { class: "sub", text: "inputs" }), numTable(slice(ins, ch))),
        el("div", {}, el("div", { class: "sub", text: "× weights" }), numTable(slice(ws, ch))),
        el("div", {}, el("div", { class: "sub", text: "= products" }), numTable(slice(ps, ch)))));
    }
    if (C > 1) {
      const cs = { shape: [C], data: Float32Array.from(u.channel_sums) };
      box.append(el("div", { class: "sub", text: "sum per input channel" }), bars(cs, scaleFor(Math.min(...u.channel_sums), Math.max(...u.channel_sums), true), "channel sum", null));
    }
  } else if (u.kind === "dot") {
    const t = el("table", {}, el("tr", {}, el("th", { text: "input" }), el("th", { text: "x" }), el("th", { text: "w" }), el("th", { text: "x·w" })));
    let shownSum = 0;
    for (const r of u.top) {
      shownSum += r.product;
      t.append(el("tr", {}, el("td", { text: String(r.input) }), el("td", { text: fmt(r.x) }), el("td", { text: fmt(r.w) }), el("td", { text: fmt(r.product) })));
    }
    const n = decode(u.inputs).data.length;
    t.append(el("tr", {}, el("td", { text: `${n - u.top.length} others` }), el("td"), el("td"), el("td", { text: fmt(u.sum - shownSum) })));
    box.append(el("p", { class: "hint", text: `z = bias + Σ of ${n} inputs × weights; the 12 largest products by size:` }), t);
  } else if (u.kind === "max") {
    box.append(el("p", { class: "hint", text: `max over the ${u.values.length}×${u.values[0].length} window of the layer's input (the winner gets the whole gradient in backward):` }),
      numTable(u.values, "", u.winner));
    box.append(el("div", { class: "formula", text: `max = ${fmt(u.max)}` }));
  } else {
    const what = u.type === "Flatten" ? `input[${u.source.join(", ")}]` : "the input at the same place";
    box.append(el("div", { class: "formula", text: `${u.type === "Dropout" ? "dropout is off at inference: " : ""}output = ${what} = ${fmt(u.input_value)}` }));
  }
  if (u.kind === "dot") {
    const act = u.activation === "softmax" ? `softmax(z)[${u.position[0]}] (uses all 10 logits)` : `${u.activation}(z)`;
    box.append(el("div", { class: "formula", id: "unit-formula",
      text: `Σ products = ${fmt(u.sum)}\n+ bias      = ${fmt(u.bias)}\n= z         = ${fmt(u.z)}   (the layer computed ${fmt(u.preactivation)})\n${act} = ${fmt(u.value)}` }));
  }
}

// ------------------------------------------------------------------ backward view
function renderClassButtons() {
  for (const [boxId, key, pinned] of [["#target-buttons", "target", "targetPinned"], ["#label-buttons", "label", "labelPinned"]]) {
    const box = $(boxId);
    box.replaceChildren();
    for (let d = 0; d < 10; d++) {
      box.append(el("button", { type: "button", class: state[key] === d ? "active" : "", "data-class": d, text: String(d),
        onclick: async () => {
          state[key] = d; state[pinned] = true; renderClassButtons();
          if (key === "target") await refreshBackward();
          else $("#step-result").replaceChildren();
        } }));
    }
  }
}

async function refreshBackward() {
  if (!state.pixels || state.target === null) return;
  try {
    const b = await api("/api/backward", { pixels: state.pixels, target: state.target });
    await loadWeights();                 // the values shown beside the gradients (the same model's)
    renderBackward(b);
  } catch (e) { showError(e.message); }
}

function renderBackward(b) {
  $("#backward-loss").textContent = `loss L = -log p[${b.target}] = ${fmt(b.loss)}  (p = ${(100 * b.probabilities[b.target]).toFixed(2)}%)`;
  const sal = decode(b.saliency), ig = decode(b.input_gradient);
  const salScale = scaleFor(sal.min, sal.max, true), igScale = scaleFor(ig.min, ig.max, true);
  paintMap($("#saliency"), 28, 28, (r, c) => sal.data[r * 28 + c], salScale);
  paintMap($("#input-gradient"), 28, 28, (r, c) => ig.data[r * 28 + c], igScale);
  $("#saliency-legend").replaceChildren(legend(salScale, "saliency"), el("br"), legend(igScale, "dL/d(input)"));
  const box = $("#backward-layers");
  box.replaceChildren();
  const view = (arr, label, name, note = null) => {
    const a = decode(arr), sc = scaleFor(a.min, a.max, true);
    return el("div", { class: "grad-view" }, el("div", { class: "sub" }, `${label} `, legend(sc)), arrayView(a, sc, `${name} ${label.split(",")[0]}`),
      note ? el("div", { class: "hint gate", text: note }) : "");
  };
  for (let i = b.layers.length - 1; i >= 0; i--) {
    const l = b.layers[i], info = layerInfo(i);
    const parts = [];
    if (l.fused) parts.push(view(l.grad_output, `dL/dz (logits: p - onehot), norm ${fmt(l.grad_output_norm)}`, l.name));
    else {
      parts.push(view(l.grad_output, `dL/d(output), norm ${fmt(l.grad_output_norm)}`, l.name));
      if (l.grad_preactivation) {
        let note = null;
        if (l.gate) {
          const g = l.gate;
          note = `ReLU gate: ${g.dark.toLocaleString()} of ${g.units.toLocaleString()} units are dark (y = 0); ` +
            `${g.dark_with_grad_output.toLocaleString()} of them have a non-zero dL/d(output), ` +
            `${g.dark_with_grad_z.toLocaleString()} a non-zero dL/dz: no gradient flows through a dark unit.`;
        }
        parts.push(view(l.grad_preactivation, `dL/dz (before ${l.activation}), norm ${fmt(l.grad_preactivation_norm)}`, l.name, note));
      }
    }
    let inNote = null;
    if (l.winners) inNote = `Only the winners get a gradient: ${l.winners.inputs_with_gradient.toLocaleString()} of ${l.winners.inputs.toLocaleString()} ` +
      `inputs (${l.winners.windows.toLocaleString()} windows) have a non-zero dL/d(input).`;
    parts.push(view(l.grad_input, `dL/d(input), norm ${fmt(l.grad_input_norm)}`, l.name, inNote));
    for (const [k, p] of Object.entries(l.params)) {
      const g = decode(p.grad), w = decode(state.weights.layers[i].params[k]);
      const gs = scaleFor(g.min, g.max, true), ws = scaleFor(w.min, w.max, true);
      parts.push(el("div", { class: "param-grad" },
        el("div", {}, el("div", { class: "sub" }, `dL/d${k} ${shapeText(g.shape)}: norm ${fmt(p.grad_norm)} `, legend(gs)),
          arrayView(g, gs, `${l.name} dL/d${k}`, null, { name: k, arr: w })),
        el("div", {}, el("div", { class: "sub" }, `${k} (the weights, |${k}| = ${fmt(p.param_norm)}) `, legend(ws)),
          arrayView(w, ws, `${l.name} ${k}`, null, { name: `dL/d${k}`, arr: g }))));
    }
    box.append(el("div", { class: "layer", "data-layer": i, id: `grad-${l.name}` },
      el("div", { class: "layer-head" }, el("b", { text: `${l.name} (${l.type})` }), el("span", { class: "meta", text: `layer ${i}, backward runs top to bottom` })),
      el("div", { class: "layer-body" },
        el("div", { class: "layer-arrays grads" }, ...parts),
        el("div", { class: "layer-code" }, el("div", { class: "formula", text: formulas(info).backward }),
          codeBlock(info.code.filter((c) => c.pass === "backward"), true)))));
  }
}

$("#gradcheck-run").addEventListener("click", async () => {
  if (!state.pixels) { showError("draw or pick a digit first"); return; }
  const box = $("#gradcheck");
  box.replaceChildren(el("p", { class: "hint", text: "checking..." }));
  try {
    const r = await api("/api/gradcheck", { pixels: state.pixels, target: state.target, samples: 3 });
    const t = el("table", { id: "gradcheck-table" }, el("tr", {}, ...["gradient", "entry", "analytic", "numeric", "rel. error", "tensor rel. error"].map((h) => el("th", { text: h }))));
    for (const row of r.tensors) {
      row.entries.forEach((e, k) => {
        const ok = e.relative_error < 1e-5 || Math.abs(e.analytic - e.numeric) < 1e-9;
        const cls = e.kink ? "kink" : ok ? "ok" : "bad";
        const tensorError = row.norm_error === null ? "n/a (all at kinks)" : row.norm_error.toExponential(2);
        const what = k === 0 ? `${row.tensor}` : k === 1 ? `${row.sampled} of ${row.pool.toLocaleString()} ${row.pool_kind}` : "";
        t.append(el("tr", {}, el("td", { class: "tensor", text: what }), el("td", { text: `[${e.index.join(", ")}]` }),
          el("td", { text: fmt(e.analytic) }), el("td", { text: fmt(e.numeric) }),
          el("td", { class: cls, text: e.relative_error.toExponential(2) + (e.kink ? " (kink)" : "") }),
          el("td", { text: k === 0 ? tensorError : "" })));
      });
    }
    const sampled = r.tensors.reduce((n, t) => n + t.sampled, 0);
    box.replaceChildren(el("p", { class: "hint", id: "gradcheck-summary", text: `${sampled} entries sampled in ${r.tensors.length} arrays: ` +
      "pixels with ink for the input, entries whose gradient is not exactly 0 for the parameters (a zero would check little). " +
      `target ${r.target}, h = ${r.h}, ${r.dtype}; rel. error = |a - n| / (|a| + |n|). ` +
      "(kink): the step ±h crosses a point where the loss has no derivative (a ReLU switching, a tie in a max-pool " +
      "window changing its winner, common where the ink is flat; found by convnet.gradcheck.switches); such " +
      "entries are left out of the tensor's error. A large error elsewhere would be a bug in backward." }), t);
  } catch (e) { box.replaceChildren(); showError(e.message); }
});

// ------------------------------------------------------------------ one training step
// The rate of the step: the page's field (the server starts it at the model's rate, or a schedule's initial one).
function stepBody() {
  const body = { pixels: state.pixels, label: state.label };
  const lr = Number($("#step-lr").value);
  if ($("#step-lr").value !== "" && Number.isFinite(lr)) body.learning_rate = lr;
  return body;
}
$("#step-lr").addEventListener("change", () => {
  $("#step-lr-source").textContent = "chosen here";
  $("#step-result").replaceChildren();
});
$("#step-preview").addEventListener("click", async () => {
  if (!state.pixels) { showError("draw or pick a digit first"); return; }
  try {
    const s = await api("/api/step", stepBody());
    renderStep(s);
  } catch (e) { showError(e.message); }
});
$("#step-apply").addEventListener("click", async () => {
  if (!state.pixels) { showError("draw or pick a digit first"); return; }
  try {
    const s = await api("/api/step/apply", stepBody());
    state.weightsStale = true;
    $("#steps-applied").textContent = `steps applied to this page's model: ${s.steps_applied}`;
    await refresh();
    $("#step-result").replaceChildren(el("p", { class: "sub", id: "step-applied",
      text: `applied with learning rate ${s.optimizer.learning_rate} (${s.optimizer.name}, step t = ${s.optimizer.iterations_after}): ` +
        `loss for label ${s.label} ${fmt(s.loss_before)} -> ${fmt(s.loss_after)}; p[${s.label}] is now ${(100 * s.probabilities[s.label]).toFixed(2)}%` }));
  } catch (e) { showError(e.message); }
});
$("#step-reset").addEventListener("click", async () => {
  try {
    await api("/api/reset", {});
    state.weightsStale = true;
    $("#steps-applied").textContent = "steps applied to this page's model: 0 (reset to the file's weights)";
    $("#step-result").replaceChildren();
    await refresh();
  } catch (e) { showError(e.message); }
});

function renderStep(s) {
  const box = $("#step-result");
  const o = s.optimizer;
  const head = [`${o.name}, step t = ${o.iterations_after} (the optimizer has taken ${o.iterations_before} steps)`,
    `learning rate ${o.learning_rate}: ${o.learning_rate_source}` +
      (o.schedule ? ` (trained with ${o.schedule.class_name} ${JSON.stringify(o.schedule.config)})` : "")];
  if (o.name === "SGD") head.push(o.config.momentum ? `v = ${o.config.momentum}·v - lr·g;  Δθ = ${o.config.nesterov ? "μ·v - lr·g" : "v"}` : "Δθ = -lr·g");
  if (o.name === "Adam") head.push(`m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  lr_t = lr·√(1-β2^t)/(1-β1^t) = ${fmt(o.lr_t)};  Δθ = -lr_t·m/(√v + ε)`);
  head.push(`loss for label ${s.label}: ${fmt(s.loss)} now, ${fmt(s.loss_after)} after the step;  ` +
    `p[${s.label}]: ${(100 * s.probabilities[s.label]).toFixed(2)}% -> ${(100 * s.probabilities_after[s.label]).toFixed(2)}%`);
  const t = el("table", { id: "step-table" }, el("tr", {}, ...["parameter", "shape", "|gradient|", "|update|", "|θ|", "|update| / |θ|", "largest |update|"].map((h) => el("th", { text: h }))));
  const pics = el("div", { class: "grads" });
  for (const p of s.params) {
    t.append(el("tr", {}, el("td", { text: p.key }), el("td", { text: shapeText(p.shape) }), el("td", { text: fmt(p.grad_norm) }),
      el("td", { text: fmt(p.update_norm) }), el("td", { text: fmt(p.param_norm) }), el("td", { text: fmt(p.relative_update) }),
      el("td", { text: fmt(p.max_update) })));
    const u = decode(p.update), sc = scaleFor(u.min, u.max, true);
    pics.append(el("div", {}, el("div", { class: "sub" }, `Δ ${p.key} `, legend(sc)), arrayView(u, sc, `Δ ${p.key}`)));
  }
  box.replaceChildren(el("div", { class: "formula", text: head.join("\n") }), t, el("h3", { text: "The update of every parameter" }), pics);
  $("#steps-applied").textContent = `steps applied to this page's model: ${s.steps_applied}`;
}

// ------------------------------------------------------------------ live training
function trainArgs() {
  const num = (id) => Number($(id).value);
  return { images: num("#train-images"), epochs: num("#train-epochs"), batch_size: num("#train-batch"),
    learning_rate: num("#train-lr"), seed: num("#train-seed") };
}
$("#train-start").addEventListener("click", async () => {
  try {
    const st = await api("/api/train/start", trainArgs());
    renderTraining(st);
    pollTraining();
  } catch (e) { showError(e.message); }
});
$("#train-stop").addEventListener("click", async () => {
  try { renderTraining(await api("/api/train/stop", {})); } catch (e) { showError(e.message); }
});
$("#train-use").addEventListener("click", async () => {
  try {
    const r = await api("/api/train/use", {});
    state.weightsStale = true;
    $("#train-state").textContent = `this page's model now has the trained weights (${r.steps} steps)`;
    $("#steps-applied").textContent = "steps applied to this page's model: 0 (the live-trained model)";
    await refresh();
  } catch (e) { showError(e.message); }
});
function pollTraining() {
  clearTimeout(state.trainTimer);
  state.trainTimer = setTimeout(async () => {
    try {
      const st = await api("/api/train/status", undefined, { keepError: true });
      renderTraining(st);
      if (st.state === "running" || st.state === "starting") pollTraining();
    } catch (e) { showError(e.message); pollTraining(); }
  }, 400);
}

function renderTraining(st) {
  const s = $("#train-state");
  if (st.state === "idle") { s.textContent = "not started"; return; }
  const last = (a) => (a.length ? a[a.length - 1] : null);
  const parts = [`${st.state}: step ${st.step} of ${st.steps} (${st.images} images, ${st.epochs} epoch(s), batch ${st.batch_size}, lr ${st.learning_rate}), ${st.seconds.toFixed(1)} s`];
  if (st.curve.loss.length) parts.push(`loss ${fmt(last(st.curve.loss))}, train accuracy ${(100 * last(st.curve.accuracy)).toFixed(1)}%`);
  if (st.test.accuracy.length) parts.push(`test accuracy ${(100 * last(st.test.accuracy)).toFixed(1)}% (${st.test_images} digits)`);
  if (st.message) parts.push(st.message);
  s.textContent = parts.join(" · ");
  s.dataset.state = st.state;
  lineChart($("#chart-loss"), [{ x: st.curve.step, y: st.curve.loss, colour: "#2a5db0", label: "train (running)" },
    { x: st.test.step, y: st.test.loss, colour: "#e07b00", label: "test" }], { xmax: st.steps });
  lineChart($("#chart-acc"), [{ x: st.curve.step, y: st.curve.accuracy, colour: "#2a5db0", label: "train (running)" },
    { x: st.test.step, y: st.test.accuracy, colour: "#e07b00", label: "test" }], { xmax: st.steps, ymin: 0, ymax: 1 });
  const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  lineChart($("#chart-grads"), Object.entries(st.grad_norms).map(([k, v], i) => ({ x: st.curve.step, y: v, colour: palette[i % 10], label: k })),
    { xmax: st.steps, log: true });
  if (st.filters) {
    const f = decode(st.filters);
    $("#train-filters").replaceChildren(kernelMosaic(f, scaleFor(f.min, f.max, true), st.filters_layer, 6));
    $("#train-filters-caption").textContent = `${st.filters_layer} kernels (${shapeText(f.shape)}), now`;
  }
}

function lineChart(cv, series, opts = {}) {
  const ctx = cv.getContext("2d"), W = cv.width, H = cv.height, L = 46, R = 8, T = 8, B = 22;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
  const tr = (v) => (opts.log ? Math.log10(Math.max(v, 1e-12)) : v);
  const ys = series.flatMap((s) => s.y.map(tr)).filter(Number.isFinite);
  if (!ys.length) return;
  let ymin = opts.ymin !== undefined ? tr(opts.ymin) : Math.min(...ys), ymax = opts.ymax !== undefined ? tr(opts.ymax) : Math.max(...ys);
  if (ymax - ymin < 1e-9) { ymax += 0.5; ymin -= 0.5; }
  const xmax = opts.xmax || Math.max(1, ...series.flatMap((s) => s.x));
  const X = (x) => L + (x / xmax) * (W - L - R), Y = (y) => T + (1 - (tr(y) - ymin) / (ymax - ymin)) * (H - T - B);
  ctx.strokeStyle = "#999"; ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, H - B); ctx.lineTo(W - R, H - B); ctx.stroke();
  ctx.fillStyle = "#444"; ctx.font = "10px sans-serif";
  const lab = (v) => fmt(opts.log ? Math.pow(10, v) : v);
  ctx.fillText(lab(ymax), 2, T + 8); ctx.fillText(lab(ymin), 2, H - B);
  ctx.fillText("0", L, H - 8); ctx.fillText(`${xmax} steps`, W - R - 50, H - 8);
  series.forEach((s) => {
    ctx.strokeStyle = s.colour; ctx.lineWidth = 1.5; ctx.beginPath();
    s.y.forEach((y, i) => { const px = X(s.x[i]), py = Y(y); if (i === 0) ctx.moveTo(px, py); else ctx.lineTo(px, py); });
    ctx.stroke();
  });
  const rowsOfLabels = Math.ceil(series.length / 3);       // the legend on a pale box over the lines
  ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
  ctx.fillRect(L + 2, T + 1, W - L - R - 4, rowsOfLabels * 11 + 3);
  series.forEach((s, k) => {
    ctx.fillStyle = s.colour; ctx.fillText(s.label, L + 6 + (k % 3) * 120, T + 10 + Math.floor(k / 3) * 11);
  });
}

// ------------------------------------------------------------------ MNIST browser
async function loadMnist() {
  const grid = $("#mnist-grid");
  try {
    const r = await api(`/api/mnist/list?kind=${state.mnistKind}&offset=${state.mnistOffset}&limit=60`);
    $("#mnist-range").textContent = r.total ? `${r.offset + 1}-${r.offset + r.items.length} of ${r.total}` : "none";
    const bin = atob(r.images);
    grid.replaceChildren();
    r.items.forEach((it, k) => {
      const cv = el("canvas", { width: 28, height: 28 });
      const ctx = cv.getContext("2d"), img = ctx.createImageData(28, 28);
      for (let p = 0; p < 784; p++) { const v = bin.charCodeAt(k * 784 + p); img.data.set([v, v, v, 255], p * 4); }
      ctx.putImageData(img, 0, 0);
      grid.append(el("figure", { class: `thumb${it.label !== it.prediction ? " wrong" : ""}`, "data-index": it.index,
        title: `test digit ${it.index}: label ${it.label}, predicted ${it.prediction}`,
        onclick: () => pickDigit(it.index) }, cv, el("figcaption", { text: `${it.label} → ${it.prediction}` })));
    });
  } catch (e) { grid.replaceChildren(el("p", { class: "hint", text: e.message })); showError(e.message); }
}
async function pickDigit(index) {
  try {
    const d = await api(`/api/mnist/digit?index=${index}`);
    state.label = d.label; state.labelPinned = true;
    showOnCanvas(d.pixels);
    await setInput(d.pixels, `MNIST test digit ${d.index}, label ${d.label}`);
  } catch (e) { showError(e.message); }
}
for (const [id, kind] of [["#mnist-all", "all"], ["#mnist-mistakes", "mistakes"]]) {
  $(id).addEventListener("click", () => {
    state.mnistKind = kind; state.mnistOffset = 0;
    $("#mnist-all").classList.toggle("active", kind === "all");
    $("#mnist-mistakes").classList.toggle("active", kind === "mistakes");
    loadMnist();
  });
}
$("#mnist-prev").addEventListener("click", () => { state.mnistOffset = Math.max(0, state.mnistOffset - 60); loadMnist(); });
$("#mnist-next").addEventListener("click", () => { state.mnistOffset += 60; loadMnist(); });

// ------------------------------------------------------------------ tabs and start-up
async function showTab(tab) {
  state.tab = tab;
  for (const o of document.querySelectorAll("#tabs button")) o.classList.toggle("active", o.dataset.tab === tab);
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== `tab-${state.tab}`;
  if (state.tab === "backward") await refreshBackward();
  if (state.tab === "mnist" && !$("#mnist-grid").children.length) await loadMnist();
  if (state.tab === "train") { try { renderTraining(await api("/api/train/status")); } catch (e) { showError(e.message); } }
}
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));

// The architecture as a strip of blocks: a click goes to the layer in the forward view (or the backward one).
function renderArchitecture() {
  const strip = $("#arch");
  strip.replaceChildren(el("span", { class: "block input", text: "input 28×28×1" }));
  state.info.layers.forEach((l, i) => {
    strip.append(el("span", { class: "arrow", text: "→" }), el("button", { type: "button", class: `block ${l.type}`, "data-layer": i,
      title: `layer ${i}: ${l.name} (${l.type}${l.activation !== "linear" ? ", " + l.activation : ""}), output ${shapeText(l.output_shape)}`,
      onclick: () => goToLayer(i) }, el("b", { text: l.name }), el("span", { text: shapeText(l.output_shape) })));
  });
}
async function goToLayer(i, tab = null) {
  const want = tab || (state.tab === "backward" ? "backward" : "forward");
  if (state.tab !== want) await showTab(want);
  const name = state.info.layers[i].name;
  const target = $(want === "backward" ? `#grad-${name}` : `#layer-${name}`);
  if (target) target.scrollIntoView({ block: "start" });
}

// A short guided path: each lesson a click away (what docs/explorer.md suggests looking at).
const LESSONS = [
  { title: "Draw a 1, then turn it into a 7", text: "Draw a 1 on the black canvas (Clear first), then add the top bar of a 7: " +
      "the ten probabilities move between the two as you draw, and the conv2d maps that detect a horizontal stroke light up.",
    go: async () => { $("#clear").click(); await showTab("forward"); $("#draw").scrollIntoView({ block: "center" }); } },
  { title: "How one unit is made", text: "The brightest unit of the first conv layer is opened in the panel beside the maps: its value " +
      "is the 4×4 inputs of its receptive field times the 4×4 weights, summed, plus a bias, through ReLU. Click a dark unit too: z was negative.",
    go: async () => { await showTab("forward"); await openBrightestUnit(0); } },
  { title: "The ReLU gate in backward", text: "In Backward, compare each ReLU layer's dL/d(output) with its dL/dz: the gate's counts show " +
      "dark units with a non-zero dL/d(output) but never a non-zero dL/dz. The code that does it is ReLUFunction.backward, highlighted beside it.",
    go: async () => { await goToLayer(0, "backward"); } },
  { title: "A right and a wrong target", text: "The target is the predicted class: dL/dz is almost zero, and so is every gradient below " +
      "(a confident right answer teaches little). Now pick another target class: large gradients flow down, and the saliency map shows the pixels that would raise it.",
    go: async () => { await showTab("backward"); $("#target-buttons").scrollIntoView({ block: "center" }); } },
  { title: "Max-pooling picks winners", text: "Follow a max-pooling layer in Backward: dL/d(input) is non-zero at one pixel per window, " +
      "the winner; dropout passes gradients unchanged at inference.",
    go: async () => { const i = state.info.layers.findIndex((l) => l.type === "MaxPool2D"); await goToLayer(Math.max(i, 0), "backward"); } },
  { title: "One training step", text: "Preview the update the optimizer would make for this digit and a label you choose, then apply it " +
      "and watch the loss fall; apply a few with a wrong label and the model learns it. Change the learning rate to see the step grow.",
    go: async () => { await showTab("step"); $("#tab-step").scrollIntoView({ block: "start" }); } },
  { title: "Train live", text: "Train a fresh copy of the architecture: the loss falls fastest in the first few dozen steps, and " +
      "the first layer's filters turn from noise into stroke detectors.",
    go: async () => { await showTab("train"); $("#tab-train").scrollIntoView({ block: "start" }); } },
];
function renderLessons() {
  const list = $("#lessons");
  list.replaceChildren(...LESSONS.map((l, k) => el("li", {}, el("button", { type: "button", class: "lesson", "data-lesson": k, text: l.title,
    onclick: async () => {
      for (const b of document.querySelectorAll("#lessons button")) b.classList.toggle("active", b.dataset.lesson === String(k));
      $("#lesson-text").textContent = l.text;
      try { await l.go(); } catch (e) { showError(e.message); }
    } }))));
}
async function openBrightestUnit(i) {
  if (!state.layers) return;
  const a = decode(state.layers[i].output);
  let best = 0;
  for (let k = 1; k < a.data.length; k++) if (a.data[k] > a.data[best]) best = k;
  const [H, W, C] = a.shape, pos = [Math.floor(best / (W * C)), Math.floor(best / C) % W, best % C];
  $(`#layer-${state.info.layers[i].name}`).scrollIntoView({ block: "start" });
  await showUnit(i, pos);
}

// The first screen: a test digit, predicted, so that every view has something to show at once.
async function firstDigit() {
  const d = await api("/api/mnist/first?index=0", undefined, { quiet: true });
  if (!d.available) {
    note(`No MNIST test digit to start with (${d.message}); draw one.`);
    return;
  }
  state.label = d.label; state.labelPinned = true;
  showOnCanvas(d.pixels);
  await setInput(d.pixels, `MNIST test digit ${d.index}, label ${d.label}: draw over it, or Clear and draw your own`);
}

(async function start() {
  renderProbabilities(null);
  renderClassButtons();
  paintInput(null);
  try {
    state.info = await api("/api/info");
    $("#model-info").textContent = `model: ${state.info.model_path} (${state.info.params.toLocaleString()} parameters, ` +
      `${state.info.layers.length} layers), backend: ${state.info.backend}`;
    const sess = state.info.session;
    if (sess) {
      $("#step-lr").value = String(sess.learning_rate);
      $("#step-lr-source").textContent = `${sess.optimizer}: ${sess.learning_rate_source}`;
    }
    renderArchitecture();
    renderLessons();
    await loadSources();
    renderChain();
    await firstDigit();
    document.body.dataset.ready = "1";
  } catch (e) { showError(`cannot reach the explorer's server: ${e.message}`); }
})();
