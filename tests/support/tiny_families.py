"""Tiny Chroma and FLUX.2 models of the real architectures, generated with fixed seeds (nothing is downloaded).

- Chroma: ComfyUI's own Chroma class (FLUX.1-like DiT with a small "distilled guidance" approximator instead of
  per-block modulation); text encoder: tiny_models' T5 file alone (CLIPLoader type "chroma"); VAE: tiny_models'
  16-channel TAESD (FLUX.1 latents).
- FLUX.2: ComfyUI's Flux class with the flux2 layout (shared modulation, gated SiLU MLP, no biases, 4-axis RoPE,
  128 latent channels at patch size 1). "klein" has no guidance_in (like klein base), "dev" has one.
  Text encoders: a tiny Qwen3 (klein, CLIPLoader type "flux2"; only where ComfyUI has ``klein_te``) and a tiny
  Mistral-3 with a byte-level tekken tokenizer stored in the file like the real one (FLUX.2 [dev]).
  VAE: the real FLUX.2 VAE layout (AutoencoderKL, 32 channels at 1/8, 2x2 patchified and batch-normed into 128
  channels at 1/16) with few channels.

Stock ComfyUI hard-codes these families' sizes (heads, approximator, VAE widths, text-encoder JSON configs) and
detects text encoders by their full widths, so ``install_family_shims`` teaches the stock loaders these small
shapes (tests only; it acts on these tiny shapes / tiny_* files only).
"""
import base64
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

import tiny_models

HIDDEN, HEADS, DEPTH, DEPTH_SINGLE = tiny_models.HIDDEN, tiny_models.HEADS, tiny_models.DEPTH, tiny_models.DEPTH_SINGLE
T5_DIM = tiny_models.T5_CONFIG["d_model"]
APPROX_DIM, APPROX_LAYERS = 32, 2  # Chroma's distilled guidance layer (real: 5120 wide, 5 layers)
# ComfyUI fixes head_dim at 128 (a class attribute, not a config field), so the heads stay 128 wide.
QWEN3_CONFIG = {"vocab_size": 151936, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 28,
                "num_attention_heads": 2, "num_key_value_heads": 1}  # Qwen3_4BModel taps layers 9, 18, 27
MISTRAL_SPECIALS = 16  # ids 0..15: <unk> <s> </s> [INST] [/INST] [SYSTEM_PROMPT] [/SYSTEM_PROMPT] ...; pad id 11
MISTRAL_CONFIG = {"vocab_size": MISTRAL_SPECIALS + 256, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 40,
                  "num_attention_heads": 2, "num_key_value_heads": 1}  # Mistral3_24BModel taps layers 10, 20, 30
FLUX2_TEXT_DIM = 3 * QWEN3_CONFIG["hidden_size"]  # FLUX.2's text encoders stack three hidden layers
assert FLUX2_TEXT_DIM == 3 * MISTRAL_CONFIG["hidden_size"]
FLUX2_VAE_SIZES = {"ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1}  # real: 128, [1, 2, 4, 4], 2
FLUX2_VAE_Z = 32

NAMES = {"chroma": "tiny_chroma.safetensors", "klein": "tiny_flux2_klein.safetensors", "flux2_dev": "tiny_flux2_dev.safetensors",
         "flux2_vae": "tiny_flux2_vae.safetensors", "qwen3": "tiny_qwen3.safetensors", "mistral3": "tiny_mistral3.safetensors",
         "t5": "tiny_t5.safetensors", "vae": "tiny_flux_taesd.safetensors"}


# ---------------------------------------------------------------- feature checks (the running ComfyUI)

def supports_chroma() -> bool:
    import comfy.supported_models
    return hasattr(comfy.supported_models, "Chroma")


def supports_flux2() -> bool:
    """FLUX.2 DiT, latent format and VAE (both tested versions have them)."""
    import comfy.latent_formats
    import comfy.supported_models
    return hasattr(comfy.supported_models, "Flux2") and hasattr(comfy.latent_formats, "Flux2")


def supports_klein() -> bool:
    """FLUX.2 [klein]'s Qwen3 text encoder (CLIPLoader type "flux2"); v0.8.0 has none."""
    import comfy.text_encoders.flux
    return supports_flux2() and hasattr(comfy.text_encoders.flux, "klein_te")


def supports_flux2_mistral() -> bool:
    """FLUX.2 [dev]'s Mistral-3 text encoder (its tokenizer needs install_family_shims on v0.8.0 + transformers 5)."""
    import comfy.text_encoders.flux
    return supports_flux2() and hasattr(comfy.text_encoders.flux, "flux2_te")


# ---------------------------------------------------------------- builders

def _init_(module, seed):
    """Random weights with 1/sqrt(fan_in) scale, norms at identity (ComfyUI's ops leave everything uninitialised)."""
    g = torch.Generator().manual_seed(seed)
    norms = {id(p) for m in module.modules() if "Norm" in type(m).__name__ for p in m.parameters(recurse=False)}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if id(p) in norms:
                p.copy_(torch.zeros_like(p) if name.endswith(".bias") else torch.ones_like(p))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p[0].numel()) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def _axes(head, n):
    """RoPE axes summing to the head width (every axis even): FLUX.1 [16, 56, 56]-like for n=3, equal for n=4."""
    if n == 3:
        side = (head * 7 // 16) // 2 * 2
        return [head - 2 * side, side, side]
    return [head // n] * n


def tiny_chroma_config():
    return dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=T5_DIM, hidden_size=HIDDEN,
                mlp_ratio=4.0, num_heads=HEADS, depth=DEPTH, depth_single_blocks=DEPTH_SINGLE, axes_dim=_axes(HIDDEN // HEADS, 3),
                theta=10000, patch_size=2, qkv_bias=True, in_dim=64, out_dim=HIDDEN, hidden_dim=APPROX_DIM,
                n_layers=APPROX_LAYERS, txt_ids_dims=[], vec_in_dim=None)


def tiny_flux2_config(guidance_embed=False):
    return dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=FLUX2_TEXT_DIM,
                hidden_size=HIDDEN, mlp_ratio=3.0, num_heads=HEADS, depth=DEPTH, depth_single_blocks=DEPTH_SINGLE,
                axes_dim=_axes(HIDDEN // HEADS, 4), theta=2000, patch_size=1, qkv_bias=False, guidance_embed=guidance_embed,
                txt_ids_dims=[3], global_modulation=True, mlp_silu_act=True, ops_bias=False)


def _dit_state_dict(model, seed):
    _init_(model, seed)
    with torch.no_grad():  # as tiny_models: a larger output layer so a working trainer shows a clear fall
        model.final_layer.linear.weight.mul_(4.0)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def tiny_chroma_state_dict(seed=0):
    import comfy.ldm.chroma.model
    import comfy.ops
    cfg = {k: v for k, v in tiny_chroma_config().items() if k != "image_model"}
    model = comfy.ldm.chroma.model.Chroma(operations=comfy.ops.disable_weight_init, dtype=torch.float32, **cfg)
    return _dit_state_dict(model, seed)


def tiny_flux2_state_dict(seed=0, guidance_embed=False):
    import comfy.ldm.flux.model
    import comfy.ops
    cfg = {k: v for k, v in tiny_flux2_config(guidance_embed).items() if k != "image_model"}
    model = comfy.ldm.flux.model.Flux(operations=comfy.ops.disable_weight_init, dtype=torch.float32, **cfg)
    return _dit_state_dict(model, seed)


def tiny_qwen3_state_dict(seed=0):
    """Qwen3-4B's layout (q/k norms, GQA) at width 16; the vocabulary covers the Qwen tokenizer's ids."""
    import comfy.ops
    import comfy.text_encoders.llama
    model = comfy.text_encoders.llama.Qwen3_4B(dict(QWEN3_CONFIG), torch.float32, "cpu", comfy.ops.disable_weight_init)
    _init_(model, seed)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def tiny_tekken_json() -> bytes:
    """A Mistral tekken tokenizer with the 256 single bytes as its vocabulary (no merges)."""
    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
    specials += [f"<SPECIAL_{i}>" for i in range(len(specials), MISTRAL_SPECIALS)]
    # LLaMA-3's split pattern: ComfyUI's own tekken reader (v0.33) always splits this way
    pattern = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
               r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
    data = {"config": {"pattern": pattern, "num_vocab_tokens": MISTRAL_CONFIG["vocab_size"],
                       "default_vocab_size": MISTRAL_CONFIG["vocab_size"], "default_num_special_tokens": MISTRAL_SPECIALS,
                       "version": "v7"},
            "vocab": [{"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode(), "token_str": None} for i in range(256)],
            "special_tokens": [{"rank": i, "token_str": s, "is_control": True} for i, s in enumerate(specials)]}
    return json.dumps(data).encode()


def tiny_mistral3_state_dict(seed=0):
    """Mistral-3 (FLUX.2 [dev]'s text encoder) at width 16, 40 layers, with its tokenizer as a uint8 'tekken_model'."""
    import comfy.ops
    import comfy.text_encoders.llama
    model = comfy.text_encoders.llama.Mistral3Small24B(dict(MISTRAL_CONFIG), torch.float32, "cpu", comfy.ops.disable_weight_init)
    _init_(model, seed)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["tekken_model"] = torch.frombuffer(bytearray(tiny_tekken_json()), dtype=torch.uint8).clone()
    return sd


def tiny_flux2_vae_state_dict(seed=0):
    """The FLUX.2 VAE's layout (AutoencoderKL + latent batch norm) with 32-wide blocks; bn stats fitted to test images."""
    import comfy.ldm.models.autoencoder
    from einops import rearrange
    ddconfig = {"double_z": True, "z_channels": FLUX2_VAE_Z, "resolution": 256, "in_channels": 3, "out_ch": 3,
                "attn_resolutions": [], "dropout": 0.0, "batch_norm_latent": True, **FLUX2_VAE_SIZES}
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=FLUX2_VAE_Z)
    _init_(vae, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # running stats of smooth random images, so encoded latents are ~N(0, 1) per channel
        images = torch.nn.functional.interpolate(torch.rand(8, 3, 8, 8, generator=g) * 2 - 1, size=64, mode="bilinear")
        z = vae.regularization(vae.quant_conv(vae.encoder(images)))[0]
        z = rearrange(z, "b c (i pi) (j pj) -> b (c pi pj) i j", pi=2, pj=2)
        vae.bn.running_mean.copy_(z.mean(dim=(0, 2, 3)))
        vae.bn.running_var.copy_(z.var(dim=(0, 2, 3)))
    return {k: v.contiguous() for k, v in vae.state_dict().items()}


def write_family_model_files(models_dir: Path, seed=0) -> dict:
    """Writes (if missing) the tiny models the running ComfyUI supports; returns their file names.

    Keys: "chroma" (diffusion_models), "t5" and "vae" (Chroma's text encoder and VAE, shared with tiny_models),
    "klein", "flux2_dev", "flux2_vae", "qwen3" (klein's text encoder), "mistral3" (FLUX.2 [dev]'s text encoder).
    """
    models_dir = Path(models_dir)
    builders = {}
    if supports_chroma():
        builders["diffusion_models/" + NAMES["chroma"]] = lambda: tiny_chroma_state_dict(seed)
        builders["text_encoders/" + NAMES["t5"]] = lambda: tiny_models.tiny_text_encoder_state_dicts(seed)[1]
        builders["vae/" + NAMES["vae"]] = lambda: tiny_models.tiny_vae_state_dict(seed)
    if supports_flux2():
        builders["diffusion_models/" + NAMES["flux2_dev"]] = lambda: tiny_flux2_state_dict(seed, guidance_embed=True)
        builders["vae/" + NAMES["flux2_vae"]] = lambda: tiny_flux2_vae_state_dict(seed)
    if supports_klein():  # v0.8.0 has no klein text encoder, and its FLUX.2 detection fixes 48 heads (klein 4B: 24)
        builders["diffusion_models/" + NAMES["klein"]] = lambda: tiny_flux2_state_dict(seed, guidance_embed=False)
        builders["text_encoders/" + NAMES["qwen3"]] = lambda: tiny_qwen3_state_dict(seed)
    if supports_flux2_mistral():
        builders["text_encoders/" + NAMES["mistral3"]] = lambda: tiny_mistral3_state_dict(seed)
    names = {}
    for rel, build in builders.items():
        path = models_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            save_file(build(), str(path))
        names[next(k for k, v in NAMES.items() if v == path.name)] = path.name
    return names


# ---------------------------------------------------------------- loader shims (tests only)

def _norm_width(sd, key):
    """Width of a norm saved as '.scale' (ComfyUI <= 0.13) or '.weight' (since 0.14)."""
    w = sd.get(f"{key}.weight", sd.get(f"{key}.scale"))
    return None if w is None else w.shape[0]


def _count(sd, prefix):
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in sd):
        n += 1
    return n


def _fix_unet_config(cfg, sd, p):
    """Tiny Chroma / FLUX.2: heads, RoPE axes, MLP ratio, approximator sizes from the state dict. Real models
    (128-wide heads) are left alone."""
    if not cfg or cfg.get("image_model") not in ("chroma", "flux2"):
        return cfg
    head = _norm_width(sd, f"{p}double_blocks.0.img_attn.norm.key_norm")
    if head is None or head == 128:
        return cfg
    hidden = sd[f"{p}img_in.weight"].shape[0]
    mlp = sd[f"{p}double_blocks.0.img_mlp.0.weight"].shape[0] / hidden
    if cfg["image_model"] == "chroma":
        cfg.update(num_heads=hidden // head, axes_dim=_axes(head, 3), mlp_ratio=mlp,
                   out_dim=sd[f"{p}distilled_guidance_layer.out_proj.weight"].shape[0],
                   hidden_dim=sd[f"{p}distilled_guidance_layer.in_proj.weight"].shape[0],
                   n_layers=_count(sd, f"{p}distilled_guidance_layer.layers."))
    else:  # gated SiLU MLP: the first layer is twice the MLP width
        cfg.update(num_heads=hidden // head, axes_dim=_axes(head, 4), mlp_ratio=mlp / 2)
    return cfg


def _tiny_te_model(sd):
    """The TEModel a tiny text-encoder file stands for, or None (stock detection keys on full widths)."""
    import comfy.sd
    k = sd.get("encoder.block.0.layer.0.SelfAttention.k.weight")
    if k is not None and k.shape[1] == T5_DIM and "encoder.block.23.layer.1.DenseReluDense.wi_1.weight" not in sd:
        return comfy.sd.TEModel.T5_XXL  # the T5-XXL layout at d_model 32 (stock: T5_BASE)
    w = sd.get("model.layers.0.post_attention_layernorm.weight")
    if w is None:
        return None
    layers = _count(sd, "model.layers.")
    if "model.layers.0.self_attn.q_norm.weight" in sd:
        if w.shape[0] == QWEN3_CONFIG["hidden_size"] and layers == QWEN3_CONFIG["num_hidden_layers"]:
            return comfy.sd.TEModel.QWEN3_4B
    elif w.shape[0] == MISTRAL_CONFIG["hidden_size"] and layers == MISTRAL_CONFIG["num_hidden_layers"]:
        return comfy.sd.TEModel.MISTRAL3_24B
    return None


def _tiny_vae_sizes(sd):
    """Encoder/decoder widths of a tiny FLUX.2-layout VAE (stock hard-codes 128 wide, [1, 2, 4, 4], 2 blocks)."""
    if sd is None or "bn.running_mean" not in sd or "encoder.conv_in.weight" not in sd:
        return None
    ch = sd["encoder.conv_in.weight"].shape[0]
    if ch == 128:
        return None
    levels = _count(sd, "encoder.down.")
    return {"ch": ch, "num_res_blocks": _count(sd, "encoder.down.0.block."),
            "ch_mult": [sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels)]}


def _mistral_tokenizer_compat(original):
    """ComfyUI <= 0.8 calls transformers 4's MistralConverter(vocab=...); transformers 5 takes a tekken.json path."""
    def load_mistral_tokenizer(data):
        try:
            return original(data)
        except TypeError:
            from transformers.integrations.mistral import MistralConverter
            if torch.is_tensor(data):
                data = data.numpy().tobytes()
            with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
                f.write(data)
            try:
                converted = MistralConverter(f.name).converted()
            finally:
                os.unlink(f.name)
            return {"tokenizer_object": converted, "legacy": False, "bos_token": "<s>", "eos_token": "</s>",
                    "unk_token": "<unk>", "add_bos_token": True}
    return load_mistral_tokenizer


def install_family_shims():
    """Tests only: lets the stock UNETLoader / CLIPLoader / VAELoader build these tiny shapes (and tiny_models')."""
    import comfy.model_detection
    import comfy.sd
    import comfy.text_encoders.flux
    tiny_models.install_loader_shims()
    if getattr(comfy.sd, "_fluxlora_families", False):
        return
    comfy.sd._fluxlora_families = True

    original_detect = comfy.model_detection.detect_unet_config

    def detect(state_dict, key_prefix, metadata=None):
        return _fix_unet_config(original_detect(state_dict, key_prefix, metadata=metadata), state_dict, key_prefix)
    detect._fluxlora_tiny = True  # wraps tiny_models' shim: a later install_loader_shims() stays a no-op
    comfy.model_detection.detect_unet_config = detect

    original_detect_te = comfy.sd.detect_te_model

    def detect_te_model(sd):
        return _tiny_te_model(sd) or original_detect_te(sd)
    comfy.sd.detect_te_model = detect_te_model

    original_load_clip = comfy.sd.load_clip

    def load_clip(ckpt_paths, embedding_directory=None, clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION, model_options={}):
        if all(Path(p).name.startswith("tiny_") for p in ckpt_paths):
            model_options = {**model_options, "qwen3_4b_model_config": dict(QWEN3_CONFIG),
                             "mistral3_24b_model_config": dict(MISTRAL_CONFIG)}
        return original_load_clip(ckpt_paths, embedding_directory=embedding_directory, clip_type=clip_type,
                                  model_options=model_options)
    comfy.sd.load_clip = load_clip

    original_vae_init = comfy.sd.VAE.__init__

    def vae_init(self, *args, **kwargs):
        sizes = None if kwargs.get("config") is not None else _tiny_vae_sizes(kwargs.get("sd", args[0] if args else None))
        if sizes is None:
            return original_vae_init(self, *args, **kwargs)
        autoencoder_kl = comfy.sd.AutoencoderKL

        def tiny_autoencoder_kl(**kw):
            kw["ddconfig"] = {**kw["ddconfig"], **sizes}
            if "decoder_ddconfig" in kw:
                kw["decoder_ddconfig"] = {**kw["decoder_ddconfig"], **sizes}
            return autoencoder_kl(**kw)
        comfy.sd.AutoencoderKL = tiny_autoencoder_kl  # read by VAE.__init__ at call time
        try:
            return original_vae_init(self, *args, **kwargs)
        finally:
            comfy.sd.AutoencoderKL = autoencoder_kl
    comfy.sd.VAE.__init__ = vae_init

    if hasattr(comfy.text_encoders.flux, "load_mistral_tokenizer"):
        flux_te = comfy.text_encoders.flux
        flux_te.load_mistral_tokenizer = _mistral_tokenizer_compat(flux_te.load_mistral_tokenizer)
