// Flux LoRA reports on their nodes: what Dataset Loader skipped, Auto Caption wrote, Trigger Word's token split and
// where Save put the file are shown in a read-only box on each node after it ran (the text the node returns as its UI
// output, which the frontend would otherwise keep in the history only).
import { app } from "../../scripts/app.js";

const REPORT_NODES = ["FluxLoRA_DatasetLoader", "FluxLoRA_ImageDataset", "FluxLoRA_AutoCaption",
  "FluxLoRA_TriggerWord", "FluxLoRA_SaveLoRA"];
const PLACEHOLDER = "The report appears here after a run.";

function reportBox(node) {
  return node.widgets?.find((w) => w.name === "fluxlora_report")?.element?.querySelector("textarea");
}

function addReport(node) {
  const root = document.createElement("div");
  root.className = "fluxlora-report";
  const box = document.createElement("textarea");
  box.readOnly = true;
  box.placeholder = PLACEHOLDER;
  box.style.cssText = "width:100%;height:88px;box-sizing:border-box;resize:none;font:11px monospace;" +
    "color:#ccc;background:#1b1b1b;border:1px solid #333;white-space:pre";
  root.append(box);
  const widget = node.addDOMWidget("fluxlora_report", "fluxlora_report", root, { serialize: false, hideOnZoom: false });
  widget.computeSize = (width) => [width, 96];
}

app.registerExtension({
  name: "fluxlora.reports",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!REPORT_NODES.includes(nodeData.name)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text;
      const box = reportBox(this);
      if (box && text != null) box.value = Array.isArray(text) ? text.join("\n") : String(text);
    };
  },
  async nodeCreated(node) {
    if (REPORT_NODES.includes(node.comfyClass)) addReport(node);
  },
});
