// Flux LoRA Trainer: live loss chart, learning rate, it/s, ETA and checkpoint samples on the Flux LoRA Train node
// (fed by the trainer's websocket events; rebuilt from /fluxlora/history after a page reload); a preset fills the
// node's steps / learning rate / rank; workflows saved with the pack's first node layout are migrated on load.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { migrateGraph, addAdvancedNodes } from "./migrate.js";
import { loadPresets, presetValues } from "./presets.js";

const TRAIN_NODES = ["FluxLoRA_Train", "FluxLoRA_SliderTrain"]; // the nodes that train and show the chart
const PRESET_WIDGETS = ["steps", "learning_rate", "rank"]; // on the train node; the preset fills them when picked
const LEGEND = [["#6f8fb0", "loss"], ["#8fd3ff", "average"], ["#d08c2c", "learning rate"], ["#5fcf6f", "validation"],
  ["#777", "checkpoint"]];

function applyPreset(node, name) {
  const values = presetValues(name);
  if (!values) return;
  for (const w of node.widgets ?? []) if (PRESET_WIDGETS.includes(w.name) && w.name in values) w.value = values[w.name];
  node.setDirtyCanvas?.(true, true);
}
const runs = new Map(); // node id -> {total, steps, loss, lr, samples, it_s, eta_s, done}

function run(id, workflow) {
  id = String(id);
  if (!runs.has(id)) runs.set(id, { total: 0, steps: [], loss: [], lr: [], validation: [], samples: [], it_s: 0, eta_s: null, done: false });
  const r = runs.get(id);
  if (workflow) r.workflow = workflow; // the workflow that queued the run (its id, from the server)
  return r;
}

// the run to draw on a node: one this workflow queued (runs of other workflows that share the node id are not shown;
// a frontend or an API prompt without workflow ids shows the node's last run, as before)
function runOf(node) {
  const r = runs.get(String(node.id));
  const here = app.rootGraph?.id ?? app.graph?.id;
  return r && (!r.workflow || !here || r.workflow === here) ? r : null;
}

// the same line as trainer/plot.py's moving_average (window: a 20th of the steps): keep the two in step
function movingAverage(values, window) {
  const out = [];
  let acc = 0;
  values.forEach((v, i) => {
    acc += v;
    if (i >= window) acc -= values[i - window];
    out.push(acc / Math.min(i + 1, window));
  });
  return out;
}

function formatEta(seconds) {
  if (seconds == null || !isFinite(seconds)) return "–";
  const s = Math.round(seconds);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`
    : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

function chartParts(node) {
  const widget = node.widgets?.find((w) => w.name === "fluxlora_chart");
  const root = widget?.element;
  if (!root) return null;
  return { canvas: root.querySelector("canvas"), info: root.querySelector(".fluxlora-info"), strip: root.querySelector(".fluxlora-strip") };
}

function draw(node) {
  const widget = chartParts(node);
  if (!widget) return;
  const r = runOf(node);
  const canvas = widget.canvas;
  const ctx = canvas.getContext("2d");
  const W = (canvas.width = canvas.clientWidth || 360), H = (canvas.height = 180);
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(0, 0, W, H);
  ctx.font = "11px sans-serif";
  if (!r || r.loss.length === 0) {
    ctx.fillStyle = "#999";
    ctx.fillText(r?.stopped ?? r?.stage ?? "Loss chart appears when training starts", 10, H / 2);
    widget.info.textContent = r?.plan ?? "";
    return;
  }
  const pad = { l: 42, r: 42, t: 10, b: 20 };
  const n = Math.max(r.total, r.steps[r.steps.length - 1]);
  const val = r.validation ?? [];
  const lo = Math.min(...r.loss, ...val.map((v) => v[1])), hi = Math.max(...r.loss, ...val.map((v) => v[1]));
  const x = (s) => pad.l + ((W - pad.l - pad.r) * (s - 1)) / Math.max(1, n - 1);
  const y = (v) => H - pad.b - ((H - pad.t - pad.b) * (v - lo)) / Math.max(1e-12, hi - lo);
  ctx.strokeStyle = "#444";
  ctx.beginPath(); ctx.moveTo(pad.l, pad.t); ctx.lineTo(pad.l, H - pad.b); ctx.lineTo(W - pad.r, H - pad.b); ctx.stroke();
  const line = (values, color, width, yf) => {
    ctx.strokeStyle = color; ctx.lineWidth = width; ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x(r.steps[i]), yf(v)) : ctx.moveTo(x(r.steps[i]), yf(v))));
    ctx.stroke();
  };
  line(r.loss, "#6f8fb0", 1, y);
  line(movingAverage(r.loss, Math.max(1, Math.floor(r.loss.length / 20))), "#8fd3ff", 2, y);
  if (val.length) { // validation loss: green line with points
    ctx.strokeStyle = ctx.fillStyle = "#5fcf6f"; ctx.lineWidth = 1.5; ctx.beginPath();
    val.forEach(([s, v], i) => (i ? ctx.lineTo(x(s), y(v)) : ctx.moveTo(x(s), y(v))));
    ctx.stroke();
    for (const [s, v] of val) { ctx.beginPath(); ctx.arc(x(s), y(v), 2.5, 0, 2 * Math.PI); ctx.fill(); }
  }
  const lrHi = Math.max(...r.lr, 1e-12);
  line(r.lr, "#d08c2c", 1, (v) => H - pad.b - ((H - pad.t - pad.b) * v) / lrHi);
  ctx.strokeStyle = "#777"; ctx.setLineDash([3, 3]);
  for (const s of r.samples) { ctx.beginPath(); ctx.moveTo(x(s.step), pad.t); ctx.lineTo(x(s.step), H - pad.b); ctx.stroke(); }
  ctx.setLineDash([]);
  ctx.fillStyle = "#bbb";
  ctx.fillText(hi.toPrecision(3), 2, pad.t + 8);
  ctx.fillText(lo.toPrecision(3), 2, H - pad.b);
  ctx.fillStyle = "#d08c2c";
  ctx.fillText(lrHi.toExponential(1), W - pad.r + 2, pad.t + 8);
  ctx.fillStyle = "#999"; // the step axis: its first and last step
  ctx.fillText("1", pad.l, H - 6);
  ctx.fillText(`step ${n}`, W - pad.r - ctx.measureText(`step ${n}`).width, H - 6);
  const last = r.steps[r.steps.length - 1];
  const lastVal = val.length ? ` · val ${val[val.length - 1][1].toFixed(4)}` : "";
  const warnings = r.warnings ?? []; // e.g. checkpoints that could not be written: on hover with the VRAM plan
  widget.info.title = [r.plan ?? "", ...warnings].filter(Boolean).join("\n");
  const end = r.stopped ?? `${r.it_s ? r.it_s.toFixed(2) : "–"} it/s · ETA ${r.done ? "done" : formatEta(r.eta_s)}`;
  widget.info.textContent = `step ${last}/${r.total} · loss ${r.loss[r.loss.length - 1].toFixed(4)}${lastVal} · ` +
    end +
    (warnings.length ? ` · ⚠ ${warnings.length} warning${warnings.length > 1 ? "s" : ""}` : "");
  widget.strip.replaceChildren(...r.samples.map((s) => {
    const img = document.createElement("img");
    img.src = api.apiURL(`/view?filename=${encodeURIComponent(s.image.filename)}&type=${s.image.type}&subfolder=${encodeURIComponent(s.image.subfolder)}`);
    img.title = `step ${s.step}`;
    img.style.cssText = "height:64px;margin-right:4px;border:1px solid #333";
    return img;
  }));
}

function redrawAll() {
  for (const node of app.graph?.nodes ?? []) {
    if (TRAIN_NODES.includes(node.comfyClass) || TRAIN_NODES.includes(node.type)) draw(node);
  }
  app.graph?.setDirtyCanvas(true, false);
}

async function loadHistory() {
  try {
    const res = await api.fetchApi("/fluxlora/history");
    if (!res.ok) return;
    const all = await res.json();
    for (const [id, h] of Object.entries(all)) {
      const r = run(id, h.workflow);
      // keep live events that arrived while the history was on its way (steps after the history's last)
      const last = h.steps[h.steps.length - 1] ?? 0;
      const keep = r.steps.map((s, i) => [s, i]).filter(([s]) => s > last).map(([, i]) => i);
      const sampleSteps = new Set(h.samples.map((x) => x.step));
      Object.assign(r, {
        total: h.total, done: h.done || r.done, plan: h.plan ?? r.plan, warnings: h.warnings ?? r.warnings,
        stage: h.stage ?? r.stage, stopped: h.stopped ?? r.stopped,
        steps: h.steps.concat(keep.map((i) => r.steps[i])),
        loss: h.loss.concat(keep.map((i) => r.loss[i])),
        lr: h.lr.concat(keep.map((i) => r.lr[i])),
        validation: (h.validation ?? []).concat((r.validation ?? []).filter(([s]) => s > last)),
        samples: h.samples.concat(r.samples.filter((x) => !sampleSteps.has(x.step))),
      });
    }
    redrawAll();
  } catch (e) {
    console.warn("fluxlora: no training history", e);
  }
}

app.registerExtension({
  name: "fluxlora.trainer",
  async beforeConfigureGraph(graphData) {
    const notes = migrateGraph(graphData);
    if (notes.length) {
      const detail = notes.join(" ");
      console.warn("fluxlora:", detail);
      app.extensionManager?.toast?.add?.({ severity: "warn", summary: "Flux LoRA workflow updated", detail, life: 15000 });
    }
  },
  async afterConfigureGraph() {
    addAdvancedNodes(app.graph);
  },
  async setup() {
    window.__fluxlora = { runs }; // read by the browser tests
    await loadPresets();
    api.addEventListener("fluxlora.progress", ({ detail }) => {
      const r = run(detail.node, detail.workflow);
      const lastStep = r.steps[r.steps.length - 1] ?? 0;
      if (detail.step === 1 || (r.done && detail.step <= lastStep)) // a new run on this node
        Object.assign(r, { steps: [], loss: [], lr: [], validation: [], samples: [], warnings: [], done: false,
          stopped: undefined, stage: undefined });
      else if (detail.step <= lastStep) return; // already known from the history
      r.done = false; // a resumed run continues the chart
      r.total = detail.total; r.steps.push(detail.step); r.loss.push(detail.loss); r.lr.push(detail.lr);
      r.it_s = detail.it_s; r.eta_s = detail.eta_s;
      redrawAll();
    });
    api.addEventListener("fluxlora.samples", ({ detail }) => {
      const r = run(detail.node, detail.workflow);
      if (!r.samples.some((x) => x.step === detail.step)) r.samples.push({ step: detail.step, image: detail.image });
      redrawAll();
    });
    api.addEventListener("fluxlora.validation", ({ detail }) => {
      const r = run(detail.node, detail.workflow);
      if (!r.validation.some(([s]) => s === detail.step)) r.validation.push([detail.step, detail.loss]);
      redrawAll();
    });
    api.addEventListener("fluxlora.warning", ({ detail }) => {
      const r = run(detail.node, detail.workflow);
      r.warnings = [...(r.warnings ?? []), detail.text];
      app.extensionManager?.toast?.add?.({ severity: "warn", summary: "Flux LoRA Train", detail: detail.text, life: 20000 });
      redrawAll();
    });
    api.addEventListener("fluxlora.plan", ({ detail }) => {
      Object.assign(run(detail.node, detail.workflow), { plan: detail.text, stopped: undefined }); redrawAll();
    });
    api.addEventListener("fluxlora.stage", ({ detail }) => { run(detail.node, detail.workflow).stage = detail.text; redrawAll(); });
    api.addEventListener("fluxlora.stopped", ({ detail }) => { run(detail.node, detail.workflow).stopped = detail.text; redrawAll(); });
    api.addEventListener("fluxlora.done", ({ detail }) => { run(detail.node, detail.workflow).done = true; redrawAll(); });
    api.addEventListener("reconnected", loadHistory);
    await loadHistory();
  },
  async nodeCreated(node) {
    if (!TRAIN_NODES.includes(node.comfyClass)) return;
    const preset = node.widgets?.find((w) => w.name === "preset");
    if (preset) {
      const previous = preset.callback;
      preset.callback = function (value, ...rest) {
        applyPreset(node, value);
        return previous?.call(this, value, ...rest);
      };
    }
    const root = document.createElement("div");
    root.className = "fluxlora-chart";
    root.style.cssText = "display:flex;flex-direction:column;gap:4px;font:11px sans-serif;color:#ccc";
    const canvas = document.createElement("canvas");
    canvas.style.cssText = "width:100%;height:180px";
    const info = document.createElement("div");
    info.className = "fluxlora-info";
    const strip = document.createElement("div");
    strip.className = "fluxlora-strip";
    strip.style.cssText = "display:flex;overflow-x:auto";
    const legend = document.createElement("div"); // what each line of the chart is
    legend.className = "fluxlora-legend";
    legend.style.cssText = "display:flex;gap:10px;color:#aaa";
    for (const [color, label] of LEGEND) {
      const item = document.createElement("span");
      item.innerHTML = `<span style="display:inline-block;width:10px;height:2px;vertical-align:middle;` +
        `margin-right:3px;background:${color}"></span>`;
      item.append(label);
      legend.append(item);
    }
    root.append(canvas, legend, info, strip);
    const widget = node.addDOMWidget("fluxlora_chart", "fluxlora_chart", root, { serialize: false, hideOnZoom: false });
    widget.computeSize = (width) => [width, 290];
    requestAnimationFrame(() => draw(node));
  },
});
