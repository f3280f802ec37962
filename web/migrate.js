// Workflows saved with the pack's first layout (Flux LoRA Train with 22 settings, Dataset Loader with 'repeats'):
// the train node keeps steps / learning rate / rank / seed and gets the 'balanced' preset; every other setting moves
// to a new 'Flux LoRA Advanced Settings' node connected to it, so the run trains exactly as before.

const OLD_TRAIN = ["steps", "learning_rate", "rank", "alpha", "optimizer", "scheduler", "warmup_steps", "batch_size",
  "grad_accumulation", "max_grad_norm", "sigma_sampling", "sigma_shift", "loss_weighting", "caption_dropout", "guidance",
  "seed", "control_after_generate", "gradient_checkpointing", "targets", "blocks", "dropout", "dora", "captions"];
// the new node's inputs in order, as the frontend serializes them (sockets, then widgets, then optional sockets)
const NEW_TRAIN_INPUTS = [["model", "MODEL"], ["clip", "CLIP"], ["vae", "VAE"], ["dataset", "FLUX_DATASET"],
  ["preset", "COMBO", true], ["steps", "INT", true], ["learning_rate", "FLOAT", true], ["rank", "INT", true],
  ["seed", "INT", true], ["resume", "COMBO", true], ["sample_settings", "FLUX_SAMPLE_SETTINGS"], ["regularization", "FLUX_DATASET"],
  ["advanced", "FLUX_LORA_ADVANCED"]];
const RENAMED_INPUTS = { samples: "sample_settings" };
const pending = new Map(); // train node id -> the Advanced Settings values to attach after the graph is configured

function oldTrainLayout(node) {
  const v = node.widgets_values;
  return node.type === "FluxLoRA_Train" && Array.isArray(v) && v.length >= 22 && typeof v[0] === "number";
}

function linkOf(links, id) {
  return (links ?? []).find((l) => (Array.isArray(l) ? l[0] : l.id) === id);
}

function setTargetSlot(link, slot) {
  if (Array.isArray(link)) link[4] = slot;
  else link.target_slot = slot;
}

function migrateTrain(node, graphData, notes) {
  const old = Object.fromEntries(OLD_TRAIN.map((name, i) => [name, node.widgets_values[i]]));
  node.widgets_values = ["balanced", old.steps, old.learning_rate, old.rank, old.seed, old.control_after_generate ?? "fixed",
    "off"];
  pending.set(node.id, {
    alpha: old.alpha, optimizer: old.optimizer, scheduler: old.scheduler, warmup_steps: old.warmup_steps,
    batch_size: old.batch_size, grad_accumulation: old.grad_accumulation, max_grad_norm: old.max_grad_norm,
    sigma_sampling: old.sigma_sampling === "logit_normal" ? "sigmoid" : old.sigma_sampling, // it was sigmoid
    sigma_shift: old.sigma_shift, loss_weighting: old.loss_weighting, caption_dropout: old.caption_dropout,
    train_guidance: old.guidance, gradient_checkpointing: old.gradient_checkpointing ? "on" : "off",
    targets: old.targets, blocks: old.blocks, lora_dropout: old.dropout, use_dora: old.dora ? "on" : "off",
  });
  const old_inputs = Object.fromEntries((node.inputs ?? []).map((i) => [RENAMED_INPUTS[i.name] ?? i.name, i]));
  for (const input of node.inputs ?? []) {
    const name = RENAMED_INPUTS[input.name] ?? input.name;
    if (!NEW_TRAIN_INPUTS.some(([n]) => n === name) && input.link != null) {
      notes.push(`Flux LoRA Train #${node.id}: its '${input.name}' input is gone - connect the images through a ` +
        "'Flux LoRA Dataset from Images' node to 'dataset'.");
      graphData.links = (graphData.links ?? []).filter((l) => (Array.isArray(l) ? l[0] : l.id) !== input.link);
    }
  }
  node.inputs = NEW_TRAIN_INPUTS.map(([name, type, widget], slot) => {
    const link = widget ? null : old_inputs[name]?.link ?? null;
    const found = link != null ? linkOf(graphData.links, link) : null;
    if (found) setTargetSlot(found, slot);
    return { localized_name: name, name, type, ...(widget ? { widget: { name } } : {}),
      ...(["sample_settings", "regularization", "advanced"].includes(name) ? { shape: 7 } : {}), link: found ? link : null };
  });
  notes.push(`Flux LoRA Train #${node.id} was saved with the old 22-setting layout: it now uses the 'balanced' ` +
    "preset, and its other settings were moved to a connected 'Flux LoRA Advanced Settings' node (same training).");
}

function migrateDatasetLoader(node, notes) {
  const v = node.widgets_values;
  if (node.type !== "FluxLoRA_DatasetLoader" || !Array.isArray(v) || v.length !== 6 || typeof v[3] !== "number") return;
  v.splice(3, 1); // 'repeats': training is counted in steps
  node.inputs = (node.inputs ?? []).filter((i) => i.name !== "repeats");
  if (v.length) notes.push(`Dataset Loader #${node.id}: 'repeats' was removed (training length is set by steps).`);
}

export function migrateGraph(graphData) {
  const notes = [];
  for (const node of graphData?.nodes ?? []) {
    if (oldTrainLayout(node)) migrateTrain(node, graphData, notes);
    else migrateDatasetLoader(node, notes);
  }
  return notes;
}

export function addAdvancedNodes(graph) {
  for (const [id, values] of pending) {
    const train = graph?.getNodeById(id);
    if (!train) continue;
    const advanced = LiteGraph.createNode("FluxLoRA_AdvancedSettings");
    graph.add(advanced);
    advanced.pos = [train.pos[0] - 380, train.pos[1] + 40];
    for (const w of advanced.widgets ?? []) if (w.name in values) w.value = values[w.name];
    advanced.connect(0, train, train.findInputSlot("advanced"));
  }
  pending.clear();
}
