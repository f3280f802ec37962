"""Trainer core of ComfyUI-FluxLoRA: FLUX.1 LoRA training on ComfyUI's already-loaded MODEL.

No ComfyUI UI code lives here; the nodes in ``nodes/`` translate ComfyUI types into calls of
:func:`.loop.train_flux_lora` and :func:`.export.save_lora_file`.
"""
