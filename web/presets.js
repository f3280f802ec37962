// Flux LoRA presets, fetched once from the pack's /fluxlora/presets route (name -> every setting's value); shared by
// the train node (a picked preset fills its widgets) and Advanced Settings (labels show the preset's values).
import { api } from "../../scripts/api.js";

let presets = null;
let loading = null;

export function loadPresets() {
  loading ??= (async () => {
    try {
      const res = await api.fetchApi("/fluxlora/presets");
      if (res.ok) presets = await res.json();
    } catch (e) {
      console.warn("fluxlora: no presets", e);
    }
  })();
  return loading;
}

export function presetValues(name) {
  return presets?.[name] ?? null;
}
