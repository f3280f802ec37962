"""FLUX.1-dev's architecture as ComfyUI builds it, with random weights (nothing is downloaded), for the benches.

``build_flux`` follows what ComfyUI's UNETLoader does after reading a file (``comfy.sd.load_diffusion_model_state_dict``):
the model config ComfyUI detects for flux1-dev, the weight format of the loader's ``weight_dtype`` widget, ComfyUI's
manual-cast dtype for the load device, the model moved to ComfyUI's offload device and wrapped in a ModelPatcher. Only
the weights differ: random, generated on ``init_device`` (a GPU generates 12B values in about a second) instead of read.
"""
import torch

# comfy/model_detection.py's detection result for flux1-dev.safetensors (key shapes of the released file)
FLUX_DEV = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
                theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[])
# the same depth and input widths at 1/12 of the hidden width: proves the bench on a CPU in minutes
FLUX_DEV_NARROW = dict(FLUX_DEV, hidden_size=256, num_heads=2)
CONFIGS = {"flux-dev": FLUX_DEV, "flux-dev-narrow": FLUX_DEV_NARROW}
# FLUX.2 [klein] base 4B: 5 double + 20 single blocks, 3072 hidden, Qwen3-4B text (3 x 2560); the ComfyUI config of
# the released file. 9B: 8 + 24 blocks (SimpleTuner's FLUX2.md), 4096 hidden and 32 heads, Qwen3-8B text (3 x 4096):
# the width is derived (it gives 9.0 B parameters; not read from the released file).
FLUX2_KLEIN_4B = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=7680,
                      hidden_size=3072, mlp_ratio=3.0, num_heads=24, depth=5, depth_single_blocks=20,
                      axes_dim=[32, 32, 32, 32], theta=2000, patch_size=1, qkv_bias=False, guidance_embed=False,
                      txt_ids_dims=[3], global_modulation=True, mlp_silu_act=True, ops_bias=False)
FLUX2_KLEIN_9B = dict(FLUX2_KLEIN_4B, context_in_dim=12288, hidden_size=4096, num_heads=32, depth=8,
                      depth_single_blocks=24)
# Chroma1: FLUX.1-schnell's blocks without modulation layers, T5 only, the approximator (ComfyUI's detected config)
CHROMA = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=4096, hidden_size=3072,
              mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000,
              patch_size=2, qkv_bias=True, in_dim=64, out_dim=3072, hidden_dim=5120, n_layers=5, txt_ids_dims=[],
              vec_in_dim=None)
PLANNED_MODELS = {"flux-dev": FLUX_DEV, "klein-4b": FLUX2_KLEIN_4B, "klein-9b": FLUX2_KLEIN_9B, "chroma": CHROMA}
CONFIGS.update(PLANNED_MODELS)
# klein 4B's depth and input widths at 1/12 of its hidden width: proves the benches' FLUX.2 path on a CPU
CONFIGS["klein-4b-narrow"] = dict(FLUX2_KLEIN_4B, hidden_size=256, num_heads=2)


def add_tiny_configs():
    """The test suite's tiny FLUX.1 and FLUX.2 models (tests/support) as bench configs 'tiny' and 'klein-tiny': the
    GPU bench bundle's rehearsal (bench/gpu/kit.sh rehearse) runs every bench row on them in seconds. They need the
    tests' loader shims (installed by tests/support/harness.setup, which the benches boot through)."""
    import tiny_families
    import tiny_models
    CONFIGS["tiny"] = tiny_models.tiny_flux_config()
    if tiny_families.supports_klein():
        CONFIGS["klein-tiny"] = tiny_families.tiny_flux2_config()


def meta_diffusion_model(config: dict, dtype):
    """ComfyUI's diffusion model of ``config`` on the meta device (no memory): for planning at full size."""
    import comfy.ldm.chroma.model
    import comfy.ldm.flux.model
    import comfy.ops
    cls = comfy.ldm.chroma.model.Chroma if config["image_model"] == "chroma" else comfy.ldm.flux.model.Flux
    cfg = {k: v for k, v in config.items() if k != "image_model"}
    return cls(operations=comfy.ops.disable_weight_init, dtype=dtype, device="meta", **cfg)

# the loader's weight_dtype choices: (weight dtype, ComfyUI's fp8 matmul optimisation)
WEIGHT_FORMATS = {"bf16": (torch.bfloat16, False), "fp8_e4m3fn": (torch.float8_e4m3fn, False),
                  "fp8_e4m3fn_fast": (torch.float8_e4m3fn, True)}
T5_TOKENS, CLIP_POOLED = 512, 768


def model_config(config: dict, weight_format: str, as_on_gpu: bool = False):
    """ComfyUI's model config for ``config`` with the inference dtypes UNETLoader would set for ``weight_format``;
    ``as_on_gpu``: those it sets on a bf16-capable GPU (compute in bf16) whatever this machine is (for estimates)."""
    import comfy.model_detection
    import comfy.model_management as mm
    cfg = comfy.model_detection.model_config_from_unet_config(dict(config))
    if cfg is None:
        raise SystemExit(f"ComfyUI does not recognise this FLUX config: {config}")
    dtype, fast = WEIGHT_FORMATS[weight_format]
    if as_on_gpu:
        manual_cast = None if dtype == torch.bfloat16 else torch.bfloat16
    else:
        manual_cast = mm.unet_manual_cast(dtype, mm.get_torch_device(), cfg.supported_inference_dtypes)
    cfg.set_inference_dtype(dtype, manual_cast)
    if fast:
        cfg.optimizations["fp8"] = True
    return cfg


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0):
    """Weights of a plausible scale: fan-in scaled matrices, residual outputs damped by the depth so that 57 random
    blocks keep the activations finite (the numbers do not matter to a speed/memory bench; NaNs would stop training)."""
    g = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    depth = sum(1 for _ in module.double_blocks) + sum(1 for _ in module.single_blocks) if hasattr(module, "double_blocks") else 1
    for name, p in module.named_parameters():
        if name.endswith(".scale") or name.endswith("norm.weight"):
            p.fill_(1.0)
            continue
        value = torch.randn(p.shape, generator=g, device=p.device, dtype=torch.bfloat16)
        if p.ndim >= 2:
            value *= p.shape[1] ** -0.5
            if any(s in name for s in ("attn.proj", "linear2", "mlp.2", "lin.weight")):
                value *= depth ** -0.5
        else:
            value *= 0.02
        p.copy_(value)


def build_flux(config: dict, weight_format: str, init_device, seed: int = 0, randomize: bool = True,
               as_on_gpu: bool = False):
    """A ModelPatcher of FLUX with random weights, as UNETLoader would return it (weights on ComfyUI's offload device).
    ``randomize=False`` leaves the weights uninitialised (for fake-tensor traces, which hold no values)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    cfg = model_config(config, weight_format, as_on_gpu)
    with torch.device(init_device):
        model = cfg.get_model({}, "", device=torch.device(init_device))
    if randomize:
        randomize_(model.diffusion_model, seed)
    if torch.device(init_device) != mm.unet_offload_device():
        model = model.to(mm.unet_offload_device())
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


def random_examples(example_cls, count: int, resolution: int, seed: int = 0, text_dim: int = 4096,
                    pooled_dim: int = CLIP_POOLED, channels: int = 16, downscale: int = 8):
    """Training examples of the real shapes (as the pack's encoder makes them, float32 on the CPU): FLUX.1's 16-channel
    latents at resolution/8, 512 T5 tokens of 4096, CLIP-L pooled 768 by default; see :func:`example_shapes`."""
    g = torch.Generator().manual_seed(seed)
    side = resolution // downscale
    return [example_cls(latent=torch.randn(channels, side, side, generator=g), context=torch.randn(T5_TOKENS, text_dim, generator=g) * 0.1,
                        pooled=torch.randn(pooled_dim, generator=g) * 0.1) for _ in range(count)]


def example_shapes(config: dict) -> dict:
    """:func:`random_examples` arguments for a model config: FLUX.2 has 128-channel latents at 1/16 and no pooled
    vector, Chroma no pooled vector; text features are 512 tokens of the model's context width for all."""
    pooled = config.get("vec_in_dim") or 0
    if config["image_model"] == "flux2":
        return dict(text_dim=config["context_in_dim"], pooled_dim=0, channels=128, downscale=16)
    return dict(text_dim=config["context_in_dim"], pooled_dim=pooled, channels=16, downscale=8)


def torch_rope(xq, xk, freqs):
    """ComfyUI's pure-torch RoPE, for ComfyUI's native TrainLoraNode on versions whose default RoPE (comfy-kitchen's
    apply_rope, v0.8.0) has no backward."""
    def one(x):
        x_ = x.to(freqs.dtype).reshape(*x.shape[:-1], -1, 1, 2)
        return (freqs[..., 0] * x_[..., 0] + freqs[..., 1] * x_[..., 1]).reshape(*x.shape).type_as(x)
    return one(xq), one(xk)
