"""Tiny models of the real architectures, generated with fixed seeds (nothing is downloaded).

- FLUX.1: ComfyUI's own Flux class with a small config, saved as a diffusion_models checkpoint.
- VAE: a 16-channel TAESD, which ComfyUI's stock VAELoader detects.
- CLIP: ComfyUI's Flux text encoder (CLIP-L + T5) with tiny layer sizes, as two text_encoders files.

Used by smoke.py (the install self-test) and by the test suite (tests/support/tiny_models.py re-exports this module).
Stock ComfyUI hard-codes Flux's head layout (24 heads of 128) and the text encoders' JSON configs, so
``install_loader_shims`` teaches the stock loaders these small shapes. Only smoke.py and the tests install the shims,
never the pack when ComfyUI loads it; they act on these tiny shapes and ``tiny_*`` files only.
"""
from pathlib import Path

import torch
from safetensors.torch import save

from . import write_replacing

HIDDEN, HEADS, DEPTH, DEPTH_SINGLE, TEXT_DIM = 64, 4, 2, 2, 32
CLIP_L_CONFIG = {"hidden_size": TEXT_DIM, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                 "projection_dim": TEXT_DIM}
T5_CONFIG = {"d_model": TEXT_DIM, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2}


def tiny_flux_config(guidance_embed=True):
    head = HIDDEN // HEADS
    side = (head * 7 // 16) // 2 * 2
    return dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=TEXT_DIM, context_in_dim=TEXT_DIM,
                hidden_size=HIDDEN, mlp_ratio=4.0, num_heads=HEADS, depth=DEPTH, depth_single_blocks=DEPTH_SINGLE,
                axes_dim=[head - 2 * side, side, side], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=guidance_embed,
                txt_ids_dims=[])


def _init_(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(".scale") or name.endswith("norm.weight") or "layer_norm" in name:
                p.copy_(torch.ones_like(p))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[1]) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def tiny_flux_state_dict(seed=0, guidance_embed=True):
    import comfy.ldm.flux.model
    import comfy.ops
    cfg = {k: v for k, v in tiny_flux_config(guidance_embed).items() if k != "image_model"}
    model = comfy.ldm.flux.model.Flux(operations=comfy.ops.disable_weight_init, dtype=torch.float32, **cfg)
    _init_(model, seed)
    with torch.no_grad():
        # A random tiny DiT cannot learn to predict the noise part of the velocity, which leaves a floor of
        # ~1 under the loss. A larger output layer starts its predictions far from the data, so a working
        # trainer shows a clear fall (the LoRA cannot touch this layer; it must steer the blocks).
        model.final_layer.linear.weight.mul_(4.0)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def tiny_vae_state_dict(seed=0):
    import comfy.taesd.taesd
    taesd = comfy.taesd.taesd.TAESD(latent_channels=16)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # ComfyUI's ops skip weight init: fill every parameter explicitly
        for p in taesd.parameters():
            fan_in = p[0].numel() if p.ndim > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5 if p.ndim > 1 else torch.zeros(p.shape))
        # the random encoder gives latents of std ~1; scale its last layer so image content (not the
        # noise, which a random tiny DiT cannot predict) dominates the loss, as photos do for FLUX
        last = [m for m in taesd.taesd_encoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.mul_(4.0)
    sd = {f"taesd_encoder.{k}": v for k, v in taesd.taesd_encoder.state_dict().items()}
    sd.update({f"taesd_decoder.{k}": v for k, v in taesd.taesd_decoder.state_dict().items()})
    sd["vae_scale"] = torch.tensor(0.3611)
    sd["vae_shift"] = torch.tensor(0.1159)
    return {k: v.contiguous() for k, v in sd.items()}


def tiny_text_encoder_state_dicts(seed=0):
    import comfy.text_encoders.flux
    model = comfy.text_encoders.flux.FluxClipModel(dtype=torch.float32, device="cpu", model_options=tiny_te_options())
    _init_(model, seed)
    clip_l = {k: v.contiguous() for k, v in model.clip_l.transformer.state_dict().items()}
    t5 = {k: v.contiguous() for k, v in model.t5xxl.transformer.state_dict().items()}
    return clip_l, t5


def tiny_te_options():
    return {"clip_l_model_config": dict(CLIP_L_CONFIG), "t5xxl_model_config": dict(T5_CONFIG)}


def write_model_files(models_dir: Path, seed=0):
    """Writes the tiny checkpoints into ComfyUI's folder layout under ``models_dir``; returns their names."""
    files = {
        "diffusion_models/tiny_flux.safetensors": tiny_flux_state_dict(seed),
        "diffusion_models/tiny_flux_schnell.safetensors": tiny_flux_state_dict(seed, guidance_embed=False),
        "vae/tiny_flux_taesd.safetensors": tiny_vae_state_dict(seed),
    }
    clip_l, t5 = tiny_text_encoder_state_dicts(seed)
    files["text_encoders/tiny_clip_l.safetensors"] = clip_l
    files["text_encoders/tiny_t5.safetensors"] = t5
    for rel, sd in files.items():
        path = models_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            write_replacing(str(path), save(sd))   # atomic: an interrupted run leaves no truncated model
    return {"unet": "tiny_flux.safetensors", "schnell": "tiny_flux_schnell.safetensors", "vae": "tiny_flux_taesd.safetensors",
            "clip_l": "tiny_clip_l.safetensors", "t5": "tiny_t5.safetensors"}


def install_loader_shims():
    """Lets the stock UNETLoader / DualCLIPLoader build these tiny shapes (smoke.py and the tests only: it wraps
    ComfyUI's model detection and CLIP loader for the whole process)."""
    import comfy.model_detection
    import comfy.sd
    if getattr(comfy.model_detection.detect_unet_config, "_fluxlora_tiny", False):
        return
    original_detect = comfy.model_detection.detect_unet_config

    def detect(state_dict, key_prefix, metadata=None):
        cfg = original_detect(state_dict, key_prefix, metadata=metadata)
        w = state_dict.get(f"{key_prefix}img_in.weight")
        if cfg and cfg.get("image_model") == "flux" and w is not None and w.shape[0] != 3072:
            norm = f"{key_prefix}double_blocks.0.img_attn.norm.key_norm"  # '.scale' up to v0.13, '.weight' since v0.14
            head = state_dict.get(f"{norm}.weight", state_dict.get(f"{norm}.scale")).shape[0]
            side = (head * 7 // 16) // 2 * 2
            cfg.update(num_heads=w.shape[0] // head, axes_dim=[head - 2 * side, side, side],
                       mlp_ratio=state_dict[f"{key_prefix}double_blocks.0.img_mlp.0.weight"].shape[0] / w.shape[0])
        return cfg
    detect._fluxlora_tiny = True
    comfy.model_detection.detect_unet_config = detect

    original_load_clip = comfy.sd.load_clip

    def load_clip(ckpt_paths, embedding_directory=None, clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION, model_options={}):
        if all(Path(p).name.startswith("tiny_") for p in ckpt_paths):
            # ComfyUI's long-CLIP check rebuilds clip_l_model_config from "model_config"
            model_options = {**model_options, **tiny_te_options(), "model_config": dict(CLIP_L_CONFIG)}
        return original_load_clip(ckpt_paths, embedding_directory=embedding_directory, clip_type=clip_type,
                                  model_options=model_options)
    comfy.sd.load_clip = load_clip
