// Flux LoRA Advanced Settings shows what each setting left at 'preset' (or -1, or empty) will be: its label becomes
// "optimizer = adamw (balanced)", the value of the preset picked on the Flux LoRA Train node it is connected to.
// Refreshed twice a second, so a new preset, link or value shows at once (tested on the classic canvas).
import { app } from "../../scripts/app.js";
import { loadPresets, presetValues } from "./presets.js";

const ADVANCED = "FluxLoRA_AdvancedSettings";

function linkOf(graph, id) {
  return graph.links?.get?.(id) ?? graph.links?.[id];
}

// the preset of the train node this advanced node feeds (null when it feeds none)
function presetOf(node) {
  for (const id of node.outputs?.[0]?.links ?? []) {
    const target = node.graph.getNodeById(linkOf(node.graph, id)?.target_id);
    const preset = target?.widgets?.find((w) => w.name === "preset");
    if (preset) return preset.value;
  }
  return null;
}

function unset(value) {
  return value === "preset" || value === -1 || value === "";
}

function shown(value) {
  if (typeof value === "boolean") return value ? "on" : "off";
  if (typeof value === "number" && !Number.isInteger(value)) return String(Number(value.toPrecision(4)));
  return value === "" ? "''" : String(value);
}

function annotate(node) {
  const preset = presetOf(node);
  const values = preset != null ? presetValues(preset) : null;
  let changed = false;
  for (const w of node.widgets ?? []) {
    if (!w.name || w.name.startsWith("fluxlora")) continue;
    const label = values && unset(w.value) && w.name in values ? `${w.name} = ${shown(values[w.name])} (${preset})`
      : undefined;
    if (w.label !== label) { w.label = label; changed = true; }
  }
  if (changed) node.setDirtyCanvas?.(true, true);
}

function annotateAll() {
  for (const node of app.graph?.nodes ?? []) if (node.comfyClass === ADVANCED || node.type === ADVANCED) annotate(node);
}

app.registerExtension({
  name: "fluxlora.advanced_values",
  async setup() {
    await loadPresets();
    window.__fluxlora_annotate = annotateAll; // the browser tests call it instead of waiting for the timer
    setInterval(annotateAll, 500);
  },
});
