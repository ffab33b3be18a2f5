// ganforge studio: plain JS, no framework. Every image comes from the server as a PNG.
"use strict";

const $ = (id) => document.getElementById(id);
const PANELS = ["explore", "interpolate", "arithmetic", "text", "monitor"];
const INT64_MIN = -(2n ** 63n), INT64_MAX = 2n ** 63n - 1n;
const state = { info: null, model: null, panel: "explore", selected: [], grid: null, slots: { a: [], b: [], c: [] },
                active: "a", runVersion: {}, runTimer: null };

function say(text) { $("message").textContent = text || ""; }

// --- fetching images: the newest request of each key wins; at most one in flight per key
const inflight = {};
async function load(key, img, url, options) {
  const slot = inflight[key] || (inflight[key] = { busy: false, next: null });
  slot.next = [img, url, options];
  if (slot.busy) return;
  slot.busy = true;
  while (slot.next) {
    const [target, u, opts] = slot.next;
    slot.next = null;
    target.dataset.state = "loading";
    try {
      const response = await fetch(u, opts);
      if (!response.ok) {
        let detail = response.statusText;
        try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
        throw new Error(`${response.status}: ${detail}`);
      }
      const blob = await response.blob();
      if (target.src.startsWith("blob:")) URL.revokeObjectURL(target.src);
      target.src = URL.createObjectURL(blob);
      await target.decode().catch(() => {});
      target.dataset.state = "ready";
      target.dataset.version = String(Number(target.dataset.version || 0) + 1);
      target.dataset.headers = JSON.stringify(Object.fromEntries(response.headers.entries()));
      say("");
    } catch (e) {
      target.dataset.state = "error";
      say(e.message);
    }
  }
  slot.busy = false;
}
const post = (body) => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

// --- seeds are int64: kept as strings, counted with BigInt
function readSeed(input) {
  const text = input.value.trim();
  if (!/^-?\d+$/.test(text)) throw new Error(`seed ${JSON.stringify(text)}: expected a whole number`);
  const value = BigInt(text);
  if (value < INT64_MIN || value > INT64_MAX) throw new Error("seed: must be in the int64 range");
  return value;
}

// --- models and panels
function model() { return state.info.models.find((m) => String(m.id) === $("model").value); }
function usable(panel, m) {
  if (panel === "monitor") return state.info.runs.length > 0;
  if (!m) return false;
  if (panel === "text") return m.kind === "text";
  if (panel === "arithmetic") return m.kind === "image" && !m.classes;
  return m.kind === "image";
}
function show(panel) {
  if (!PANELS.includes(panel)) panel = "explore";
  const m = model();
  if (!usable(panel, m)) panel = PANELS.find((p) => usable(p, m)) || "monitor";
  state.panel = panel;
  for (const p of PANELS) {
    $("panel-" + p).hidden = p !== panel;
    $("tab-" + p).classList.toggle("active", p === panel);
    $("tab-" + p).disabled = !usable(p, m);
  }
  if (location.hash !== "#" + panel) history.replaceState(null, "", "#" + panel);
  refresh();
}
function refresh() {
  try {
    if (state.panel === "explore") drawExplore();
    if (state.panel === "interpolate") drawInterpolation(true);
    if (state.panel === "arithmetic") { drawExplore($("arith-source")); drawArithmetic(); }
    if (state.panel === "monitor") watchRun();
  } catch (e) { say(e.message); }
}

function modelChanged() {
  const m = model();
  state.selected = [];
  state.slots = { a: [], b: [], c: [] };
  const conditional = m && m.classes;
  $("label-box").hidden = !conditional;
  $("label").innerHTML = '<option value="">every class in turn</option>' +
    (conditional ? m.classes.map((c, i) => `<option value="${i}">${i}: ${escape(c)}</option>`).join("") : "");
  const attrs = m && m.attributes;
  for (const q of document.querySelectorAll(".slot .query")) q.hidden = !attrs;
  $("attributes").textContent = attrs ? "attributes: " + attrs.join(", ") : "";
  $("stage2-box").hidden = !(m && m.stages && m.stages.length > 1);
  renderSelection();
  renderSlots();
  renderSliders();
  show(state.panel);
}
function escape(text) { const d = document.createElement("div"); d.textContent = text; return d.innerHTML; }

// --- explore
function exploreParams() {
  const params = new URLSearchParams({ seed: readSeed($("seed")).toString(), n: $("count").value });
  if ($("truncate").checked) params.set("truncation", $("truncation").value);
  if ($("label").value !== "") params.set("label", $("label").value);
  return params;
}
function drawExplore(img) {
  const m = model();
  if (!m || m.kind !== "image") return;
  const params = exploreParams();
  state.grid = { seed: params.get("seed"), n: Number(params.get("n")),
                 truncation: params.has("truncation") ? Number(params.get("truncation")) : null,
                 label: params.has("label") ? Number(params.get("label")) : null, size: m.image_size };
  $("arith-seed").textContent = state.grid.seed;
  const target = img || $("explore-grid");
  load(target.id, target, `/api/models/${m.id}/explore?${params}`);
  renderMarks();
}
function stepSeed(delta) {
  try {
    let seed = readSeed($("seed")) + delta;
    if (seed > INT64_MAX) seed = INT64_MIN;
    if (seed < INT64_MIN) seed = INT64_MAX;
    $("seed").value = seed.toString();
    refresh();
  } catch (e) { say(e.message); }
}
// the sample under a point of a grid image (grids are ceil(sqrt(n)) wide, 2 px gaps)
function refAt(img, event) {
  const g = state.grid;
  if (!g || !img.naturalWidth) return null;
  const columns = Math.ceil(Math.sqrt(g.n));
  const rect = img.getBoundingClientRect();
  const x = (event.clientX - rect.left) * img.naturalWidth / rect.width;
  const y = (event.clientY - rect.top) * img.naturalHeight / rect.height;
  const cell = g.size + 2;
  const col = Math.floor((x - 1) / cell), row = Math.floor((y - 1) / cell);
  const index = row * columns + col;
  if (col < 0 || col >= columns || row < 0 || index >= g.n) return null;
  const n_classes = model().classes ? model().classes.length : 0;
  const label = g.label !== null ? g.label : (n_classes ? index % n_classes : null);
  return { seed: g.seed, index, truncation: g.truncation, label };
}
function select(ref) {
  state.selected = state.selected.filter((r) => !(r.seed === ref.seed && r.index === ref.index)).concat([ref]).slice(-2);
  renderSelection();
  renderMarks();
  drawMoved();
}
function renderMarks() {
  const box = $("explore-marks");
  box.innerHTML = "";
  const g = state.grid, img = $("explore-grid");
  if (!g || !img.naturalWidth) return;
  const columns = Math.ceil(Math.sqrt(g.n)), scale = img.clientWidth / img.naturalWidth, cell = g.size + 2;
  state.selected.forEach((r, i) => {
    if (r.seed !== g.seed || r.index >= g.n) return;
    const mark = document.createElement("div");
    mark.className = "mark";
    Object.assign(mark.style, { left: `${(1 + (r.index % columns) * cell) * scale}px`,
      top: `${(1 + Math.floor(r.index / columns) * cell) * scale}px`, width: `${(cell) * scale}px`, height: `${cell * scale}px` });
    mark.innerHTML = `<span>${"AB"[i]}</span>`;
    box.appendChild(mark);
  });
}
function thumb(ref) {
  const img = document.createElement("img");
  img.title = `seed ${ref.seed}, sample ${ref.index}`;
  const body = { a: ref, b: ref, steps: 1 };
  load("thumb-" + Math.random(), img, `/api/models/${model().id}/interpolate`, post(body));
  return img;
}
function renderSelection() {
  const box = $("selection");
  box.innerHTML = "";
  state.selected.forEach((r, i) => {
    const span = document.createElement("span");
    span.className = "thumb";
    span.append(`${"AB"[i]} `, thumb(r));
    box.appendChild(span);
  });
  for (const [i, id] of [[0, "interp-a"], [1, "interp-b"]]) {
    const el = $(id), r = state.selected[i];
    el.innerHTML = "";
    el.classList.toggle("empty", !r);
    if (r) el.appendChild(thumb(r)); else el.textContent = "AB"[i];
  }
}

// --- latent directions: a slider per direction moves the selected samples
function renderSliders() {
  const m = model(), methods = m && m.directions ? Object.keys(m.directions) : [];
  $("directions-box").hidden = !methods.length;
  if (!methods.length) return;
  const chosen = methods.includes($("direction-method").value) ? $("direction-method").value : methods[0];
  $("direction-method").innerHTML = methods.map((k) => `<option value="${k}">${k}</option>`).join("");
  $("direction-method").value = chosen;
  $("sliders").innerHTML = Array.from({ length: m.directions[chosen] }, (_, i) =>
    `<label>${i} <input type="range" min="-3" max="3" step="0.1" value="0" data-direction="${i}">` +
    `<output>0.0</output></label>`).join("");
  for (const input of $("sliders").querySelectorAll("input")) input.addEventListener("input", () => {
    input.nextElementSibling.textContent = Number(input.value).toFixed(1);
    drawMoved();
  });
  drawMoved();
}
function drawMoved() {
  const m = model();
  if (!m || !m.directions || !Object.keys(m.directions).length) return;
  $("moved").hidden = !state.selected.length;
  if (!state.selected.length) return;
  const amounts = Array.from($("sliders").querySelectorAll("input"), (input) => Number(input.value));
  load("moved", $("moved"), `/api/models/${m.id}/directions`,
       post({ refs: state.selected, amounts, method: $("direction-method").value }));
}

// --- interpolate
function drawInterpolation(strip) {
  const m = model();
  $("interp-t-value").textContent = Number($("interp-t").value).toFixed(2);
  if (!m || state.selected.length < 2) { say("select two samples in Explore to interpolate between them"); return; }
  const [a, b] = state.selected, method = $("interp-method").value, t = Number($("interp-t").value);
  const steps = Math.min(16, Math.max(2, Number($("interp-steps").value) || 8));
  if (strip) load("strip", $("interp-strip"), `/api/models/${m.id}/interpolate`, post({ a, b, method, steps }));
  load("frame", $("interp-frame"), `/api/models/${m.id}/interpolate`, post({ a, b, method, steps: 1, t0: t, t1: t }));
}

// --- arithmetic
function renderSlots() {
  for (const name of ["a", "b", "c"]) {
    const slot = $("slot-" + name), items = slot.querySelector(".items");
    slot.classList.toggle("active", state.active === name);
    items.innerHTML = "";
    for (const r of state.slots[name]) items.appendChild(thumb(r));
  }
}
function term(name) {
  const query = $("slot-" + name).querySelector(".query");
  if (!query.hidden && query.value.trim()) return { query: query.value.trim() };
  return state.slots[name].length ? { refs: state.slots[name] } : null;
}
function drawArithmetic() {
  const m = model();
  if (!m || m.kind !== "image") return;
  const terms = { a: term("a"), b: term("b"), c: term("c") };
  const missing = Object.keys(terms).filter((k) => !terms[k]);
  if (missing.length) { say(`put samples into ${missing.join(", ").toUpperCase()} (click or drag from the grid)`); return; }
  load("arith", $("arith-grid"), `/api/models/${m.id}/arithmetic`, post({ ...terms, noise: Number($("arith-noise").value) }));
}
function addToSlot(name, ref) {
  if (!ref) return;
  if (state.slots[name].length >= 16) { say("a slot holds at most 16 samples"); return; }
  state.slots[name].push(ref);
  const order = ["a", "b", "c"];
  if (state.slots[name].length === 1 && order.indexOf(name) < 2 && !state.slots[order[order.indexOf(name) + 1]].length)
    state.active = order[order.indexOf(name) + 1];  // the next empty slot becomes active
  renderSlots();
  drawArithmetic();
}

// --- text to image
function drawText(event) {
  if (event) event.preventDefault();
  const m = model();
  const prompt = $("prompt").value;
  if (!m || m.kind !== "text") return;
  if (!prompt.trim()) { say("type a caption first"); return; }
  let seed;
  try { seed = readSeed($("t2i-seed")); } catch (e) { say(e.message); return; }
  const params = (stage) => new URLSearchParams({ prompt, seed: seed.toString(), n: "8", stage: String(stage) });
  load("t2i1", $("t2i-stage1"), `/api/models/${m.id}/text?${params(1)}`).then(() => {
    const unknown = JSON.parse($("t2i-stage1").dataset.headers || "{}")["x-unknown-words"];
    $("t2i-note").textContent = unknown ? `the text encoder has never seen: ${unknown}` : "";
  });
  if (m.stages.length > 1) load("t2i2", $("t2i-stage2"), `/api/models/${m.id}/text?${params(2)}`);
}

// --- training monitor: polls the run every 2 s, reloads a figure when its file changed
async function watchRun() {
  clearTimeout(state.runTimer);
  if (state.panel !== "monitor" || !$("run").value) return;
  const id = $("run").value;
  try {
    const response = await fetch(`/api/runs/${id}`);
    const run = await response.json();
    if (!response.ok) throw new Error(run.detail);
    const last = run.last || {};
    $("run-status").textContent = (run.training ? "● training" : "idle") +
      (last.step !== undefined ? ` — step ${last.step}, D loss ${fmt(last.d_loss)}, G loss ${fmt(last.g_loss)}` : " — no stats yet");
    const seen = state.runVersion[id] || {};
    if (run.stats_version && run.stats_version !== seen.stats && last.d_loss !== undefined)
      load("curves", $("monitor-curves"), `/api/runs/${id}/figure/curves`);
    if (run.panel && run.panel_version !== seen.panel) {
      load("panel", $("monitor-panel"), `/api/runs/${id}/figure/latest`);
      $("panel-name").textContent = `latest samples (${run.panel})`;
    }
    state.runVersion[id] = { stats: run.stats_version, panel: run.panel_version };
  } catch (e) { say(e.message); }
  state.runTimer = setTimeout(watchRun, 2000);
}
const fmt = (v) => (typeof v === "number" ? v.toFixed(3) : "?");

// --- wiring
function gridClick(event) {
  const ref = refAt(event.currentTarget, event);
  if (!ref) return;
  if (event.currentTarget.id === "arith-source") addToSlot(state.active, ref); else select(ref);
}
function gridDrag(event) {
  const ref = refAt(event.currentTarget, event);
  if (!ref) { event.preventDefault(); return; }
  event.dataTransfer.setData("application/x-ganforge-sample", JSON.stringify(ref));
  event.dataTransfer.effectAllowed = "copy";
}

async function start() {
  const response = await fetch("/api/info");
  state.info = await response.json();
  $("model").innerHTML = state.info.models.map((m) =>
    `<option value="${m.id}">${escape(m.name)} (${escape(m.model)}, ${m.kind === "text" ? "text to image" : escape(m.data || "")})</option>`).join("");
  $("run").innerHTML = state.info.runs.map((r) =>
    `<option value="${r.id}">${escape(r.name)}${r.training ? " ● training" : ""}</option>`).join("");
  const training = state.info.runs.find((r) => r.training);
  if (training) $("run").value = String(training.id);
  for (const p of PANELS) $("tab-" + p).addEventListener("click", () => show(p));
  $("model").addEventListener("change", modelChanged);
  $("prev-seed").addEventListener("click", () => stepSeed(-1n));
  $("next-seed").addEventListener("click", () => stepSeed(1n));
  $("seed").addEventListener("change", refresh);
  $("count").addEventListener("change", refresh);
  $("label").addEventListener("change", refresh);
  $("truncate").addEventListener("change", () => { $("truncation").disabled = !$("truncate").checked; truncationShown(); refresh(); });
  $("truncation").addEventListener("input", () => { truncationShown(); refresh(); });
  for (const id of ["explore-grid", "arith-source"]) {
    $(id).addEventListener("click", gridClick);
    $(id).addEventListener("dragstart", gridDrag);
  }
  $("explore-grid").addEventListener("load", renderMarks);
  $("interp-t").addEventListener("input", () => drawInterpolation(false));
  $("interp-method").addEventListener("change", () => drawInterpolation(true));
  $("interp-steps").addEventListener("change", () => drawInterpolation(true));
  $("arith-noise").addEventListener("input", drawArithmetic);
  for (const slot of document.querySelectorAll(".slot")) {
    const name = slot.dataset.slot;
    slot.addEventListener("click", (e) => { if (e.target.tagName !== "INPUT" && e.target.tagName !== "BUTTON") { state.active = name; renderSlots(); } });
    slot.addEventListener("dragover", (e) => { e.preventDefault(); slot.classList.add("over"); });
    slot.addEventListener("dragleave", () => slot.classList.remove("over"));
    slot.addEventListener("drop", (e) => {
      e.preventDefault();
      slot.classList.remove("over");
      const data = e.dataTransfer.getData("application/x-ganforge-sample");
      if (data) addToSlot(name, JSON.parse(data));
    });
    slot.querySelector(".clear").addEventListener("click", () => { state.slots[name] = []; slot.querySelector(".query").value = ""; renderSlots(); });
    slot.querySelector(".query").addEventListener("change", drawArithmetic);
  }
  $("direction-method").addEventListener("change", renderSliders);
  $("directions-reset").addEventListener("click", () => {
    for (const input of $("sliders").querySelectorAll("input")) { input.value = "0"; input.nextElementSibling.textContent = "0.0"; }
    drawMoved();
  });
  $("t2i-form").addEventListener("submit", drawText);
  $("run").addEventListener("change", () => { state.runVersion = {}; watchRun(); });
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  state.panel = location.hash.slice(1) || "explore";
  modelChanged();
}
function truncationShown() { $("truncation-value").textContent = $("truncate").checked ? $("truncation").value : "off"; }

start().catch((e) => say("could not start: " + e.message));
