"""Trainer core of ComfyUI-FluxLoRA: FLUX.1 LoRA training on ComfyUI's already-loaded MODEL. No ComfyUI UI code here.

Entry points for the nodes in ``nodes/``: :func:`.run.train_run` (a whole training run), :func:`.export.save_to_loras`
(a LoRA file), :func:`.dataset.load_folder`, :func:`.caption.caption_dataset`, :func:`.sampling.render`.

- settings: every training setting, declared once; presets.
- data: dataset (folder -> images, captions, buckets), caption (VLM captions), trigger, examples (VAE/text encoding),
  cache (encodings on disk).
- model: flux_model (what the MODEL is), lora (peft adapters), blocks + rope (grad-correct block forward), predict,
  objective (rectified flow), optim, vram, comfy_features (what this ComfyUI offers), loop (the training loop).
- outputs: result (LoRA + run record), export (files), plot (loss curve), sampling (samples), images.
"""
