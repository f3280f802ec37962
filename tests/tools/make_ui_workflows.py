"""Regenerates the drag-and-drop (UI format) workflows from workflows/api/*.json with the real ComfyUI frontend:
loadApiJson -> notes -> layout -> serialize. Run after changing an API workflow:

    ~/.venvs/comfyui-fluxlora-0.8.0/bin/python tests/make_ui_workflows.py
"""
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"

NOTES = {
    "flux_lora_trainer": [
        ("Flux LoRA Trainer - start here",
         "1. Put 10-30 photos (png/jpg/webp) in ComfyUI/input/lora_dataset (or type an absolute folder).\n"
         "   Optional captions: photo1.png -> photo1.txt. Missing captions are written by Auto Caption.\n"
         "2. Pick a unique trigger word (Trigger Word node), e.g. mytoken_artstyle.\n"
         "3. Models: flux1-dev in models/diffusion_models (weight_dtype fp8_e4m3fn below 24 GB),\n"
         "   clip_l + t5xxl in models/text_encoders, ae.safetensors in models/vae.\n"
         "4. Pick a preset on Flux LoRA Train (balanced / subject / style / fast test) and Queue.\n"
         "   Watch the loss chart and the samples every 250 steps on the Flux LoRA Train node.\n"
         "   The LoRA lands in models/loras/flux_lora/ and is rendered once more at the end."),
        ("Settings",
         "The preset fills every setting; steps, learning rate and rank on the node follow it.\n"
         "images: 10-30, resolution 1024, about 100 steps per image\n"
         "rank 16 (32 for detailed styles); learning rate 1e-4 (up to 4e-4)\n"
         "Flux LoRA Advanced Settings: anything not left at 'preset' replaces the preset's value\n"
         "(optimizer, schedule, noise sampling, caption dropout, targets, DoRA ...).\n"
         "Samples (Test Sampler): 20 Euler steps, guidance 3.5, fixed seed -> comparable checkpoints."),
    ],
    "flux_lora_merge": [
        ("Merge a LoRA into FLUX.1-dev",
         "Bakes a trained LoRA into the model: the result is a plain diffusion model (output/diffusion_models/),\n"
         "which Load Diffusion Model lists. base + LoRA, exactly as LoraLoader applies it.\n"
         "Load the base with weight_dtype 'default' (bf16): merging into fp8 weights adds the LoRA in fp8\n"
         "precision and loses most of it. Load the merged file with fp8_e4m3fn afterwards if VRAM is short.\n"
         "Stack several LoRAs by chaining LoraLoaderModelOnly nodes before Save."),
    ],
    "flux_lora_kontext": [
        ("Train a FLUX.1 Kontext edit LoRA",
         "Load flux1-kontext-dev. Put the 'after' images in input/kontext_dataset and the 'before' images,\n"
         "with the same file names, in input/kontext_dataset_control (or name_control.png next to name.png).\n"
         "Each caption (name.txt) is the edit instruction, e.g. 'turn this photo into a watercolor painting'.\n"
         "Checkpoint samples edit a held-out (else the first) control image: control | result per row.\n"
         "Below: the trained LoRA edits your own image (Load Image -> ReferenceLatent; example.png is ComfyUI's\n"
         "sample picture - pick yours), ~1 megapixel works best."),
    ],
    "flux_lora_klein": [
        ("Train a FLUX.2 [klein] LoRA",
         "Models: flux-2-klein-base-4b (or 9b) in models/diffusion_models, its Qwen3 text encoder\n"
         "(qwen_3_4b / qwen_3_8b, Load CLIP type flux2) in models/text_encoders, flux2-vae in models/vae.\n"
         "Train on klein *base*: the distilled klein is for inference (musubi-tuner's advice).\n"
         "Put 10-30 captioned photos in input/lora_dataset; Trigger Word adds your trigger.\n"
         "klein has no guidance input: samples use real CFG (Test Sampler's guidance = CFG scale, ~4).\n"
         "The LoRA is saved in kohya format; stock LoraLoader loads it (below)."),
    ],
    "flux_lora_klein_edit": [
        ("Train a FLUX.2 [klein] edit LoRA (one or more reference images)",
         "Models as for klein: flux-2-klein-base-4b (or 9b), qwen_3_4b (CLIPLoader type flux2), flux2-vae.\n"
         "Put the edited ('after') images in input/klein_edit_dataset with their instruction as name.txt,\n"
         "and their references with the same file names in klein_edit_dataset_control_1 and _control_2\n"
         "(one folder per reference, in order; one folder for single-reference edits),\n"
         "or name_control_1.png, name_control_2.png next to name.png (then clear control_folder).\n"
         "Targets missing a reference are listed in the report and skipped. Samples: references | result.\n"
         "Below: the LoRA edits your own images (Load Image x2 -> ReferenceLatent x2, real CFG ~4)."),
    ],
    "flux_lora_chroma": [
        ("Train a Chroma LoRA",
         "Models: Chroma in models/diffusion_models, t5xxl in models/text_encoders (Load CLIP type chroma),\n"
         "ae.safetensors (FLUX.1's VAE) in models/vae.\n"
         "Put 10-30 captioned photos in input/lora_dataset; Trigger Word adds your trigger.\n"
         "Chroma trains with guidance 0 and unpadded T5 text, as ComfyUI samples it; samples use real CFG\n"
         "(Test Sampler's guidance = CFG scale, ~4) against an empty negative prompt."),
    ],
    "flux_lora_compare": [
        ("Which checkpoint is best? (watch the samples, not the loss)",
         "Renders a finished (or still running) run's checkpoints side by side: a row per checkpoint,\n"
         "a column per Test Sampler prompt, one seed for every cell, each checkpoint loaded like LoraLoader.\n"
         "run: the run folder in loras/fluxlora_runs ('latest' = the newest; reload the page for new runs).\n"
         "checkpoints: 'all', 'last 4' or steps '500, 1000'. strengths: '1.0', or '0, 0.75, 1' (0 = no LoRA).\n"
         "Connect the model the run trained. Then set output_step to the step you like and queue again:\n"
         "lora_name feeds the LoraLoader below (its file is in loras/fluxlora_runs/<run>/)."),
    ],
    "flux_lora_slider": [
        ("Train a concept slider (no dataset)",
         "A slider LoRA moves one concept along a knob: LoraLoader strength +1 -> toward the positive prompt,\n"
         "-1 -> toward the negative prompt, 0 -> the model unchanged. Trained from the three prompts alone.\n"
         "target: what the slider acts on, without the concept ('a photo of a person').\n"
         "positive / negative: the two ends ('a photo of an old person' / 'a photo of a young person').\n"
         "The model renders a few images of the target once (images, resolution) and learns at their noise.\n"
         "Samples every 100 steps: each Test Sampler prompt at strength -1 | 0 | +1, same seed.\n"
         "Below: the saved slider loaded at strength -1 (try -2 .. +2)."),
    ],
    "flux_lora_trainer_captioned_folder": [
        ("Train on an already-captioned folder",
         "For a folder where every image already has a caption file (photo1.png + photo1.txt).\n"
         "No Auto Caption: the report lists any image without a caption.\n"
         "Trigger Word adds your trigger to every caption (never twice).\n"
         "Pick a preset on Flux LoRA Train; steps, learning rate and rank follow it."),
    ],
}

# Where ComfyUI's own workflow templates download each model file (Comfy-Org/workflow_templates: flux_dev_full_text_to_image,
# image_flux2_klein_text_to_image), as the loaders' properties.models that the frontend's Missing Models dialog offers
HF = "https://huggingface.co/"
MODEL_DOWNLOADS = {
    "flux1-dev.safetensors": (HF + "Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors", "diffusion_models"),
    "clip_l.safetensors": (HF + "comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors", "text_encoders"),
    "t5xxl_fp16.safetensors": (HF + "comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
                               "text_encoders"),
    "ae.safetensors": (HF + "Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors", "vae"),
    "flux-2-klein-base-4b.safetensors": (HF + "Comfy-Org/flux2-klein/resolve/main/split_files/diffusion_models/"
                                         "flux-2-klein-base-4b.safetensors", "diffusion_models"),
    "qwen_3_4b.safetensors": (HF + "Comfy-Org/flux2-klein/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors",
                              "text_encoders"),
    "flux2-vae.safetensors": (HF + "Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors", "vae"),
}
LOADERS = ("UNETLoader", "DualCLIPLoader", "CLIPLoader", "VAELoader")


def add_model_downloads(graph: dict):
    """properties.models on every model loader whose file ComfyUI's templates download (the others are left alone)."""
    for node in graph.get("nodes", []):
        if node.get("type") in LOADERS:
            files = [v for v in node.get("widgets_values", []) if isinstance(v, str) and v in MODEL_DOWNLOADS]
            if files:
                node.setdefault("properties", {})["models"] = [
                    {"name": f, "url": MODEL_DOWNLOADS[f][0], "directory": MODEL_DOWNLOADS[f][1]} for f in files]


LAYOUT_JS = """
async ({api, name, notes}) => {
  await app.loadApiJson(api, name);
  const graph = app.graph;
  for (const node of graph.nodes) {  // sizes as the nodes render (DOM widgets: chart, reports), before arranging
    const [w, h] = node.computeSize();
    const image = node.type === "PreviewImage" || node.type === "SaveImage" ? 420 : 0;  // a readable loss curve
    node.setSize([Math.max(node.size[0], w, image), Math.max(node.size[1], h, image)]);
  }
  graph.arrange(80);
  for (const node of graph.nodes) {  // seeds stay fixed: a re-queue must not silently retrain with a new seed
    for (const w of node.widgets ?? []) if (w.name === "control_after_generate") w.value = "fixed";
  }
  let x = 0;
  for (const [title, text] of notes) {
    const note = LiteGraph.createNode("Note");
    note.title = title;
    note.widgets[0].value = text;
    note.size = [460, 240];
    graph.add(note);
    note.pos = [x, -300];
    x += 500;
  }
  return JSON.stringify(app.rootGraph.serialize());  // drops undefined fields (JSON null breaks the schema)
}
"""


def main():
    import comfy_env
    comfy_env.boot()
    import browser
    root = Path(tempfile.mkdtemp(prefix="fluxlora_ui_"))
    browser.prepare_root(root)
    with browser.comfyui_server(root) as url, browser.browser_page(url) as page:
        for api_file in sorted((WORKFLOWS / "api").glob("*.json")):
            name = api_file.stem
            graph = json.loads(page.evaluate(LAYOUT_JS, {"api": json.loads(api_file.read_text()), "name": name,
                                                         "notes": NOTES.get(name, [])}))
            graph.pop("id", None)  # a fresh id each time: keep the file stable
            add_model_downloads(graph)
            (WORKFLOWS / f"{name}.json").write_text(json.dumps(graph, indent=2) + "\n")
            print("wrote", WORKFLOWS / f"{name}.json", len(graph["nodes"]), "nodes")
    sys.path.insert(0, str(WORKFLOWS.parent / "tools"))
    import registry
    registry.stamp_workflows()   # the pack's Registry id and version on its nodes (Manager's install-missing)


if __name__ == "__main__":
    main()
