"""What the pack's memory plan would choose for full-size FLUX.1-dev on this machine's card, before anything is
downloaded: the plan the train node prints (trainer/memory_plan.py) for the bundled workflow's settings, on
FLUX.1-dev's real architecture built on the meta device (no memory, no weights, no file)."""
import torch

GIB = 1024 ** 3
# ComfyUI's detected config of flux1-dev.safetensors: the same as bench/flux_configs.py's FLUX_DEV (a test holds them
# equal; bench/ does not ship, so the pack keeps its own copy)
FLUX_DEV = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096,
                hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
                theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[])
# how Load Diffusion Model can load it: (its weight_dtype, the dtype it stores the weights in, that format's name)
LOADS = (("default (bf16)", torch.bfloat16, "bf16"), ("fp8_e4m3fn", torch.float8_e4m3fn, "fp8"))


def meta_flux_dev(dtype):
    """ComfyUI's FLUX.1-dev diffusion model with weights of ``dtype`` on the meta device."""
    import comfy.ldm.flux.model
    import comfy.ops
    cfg = {k: v for k, v in FLUX_DEV.items() if k != "image_model"}
    return comfy.ldm.flux.model.Flux(operations=comfy.ops.disable_weight_init, dtype=dtype, device="meta", **cfg)


def plan_for(trainer, settings, dm, resolution: int, available: int, free_ram: int, on_gpu: bool):
    """memory_plan.make_plan with the arguments trainer/memory_plan.py's plan_run gives it for ``settings``, for a
    square dataset of ``resolution`` px. Raises memory_plan.NotEnoughMemory where the run cannot fit."""
    mp = trainer("memory_plan")
    base_weights = "fp8" if settings.fp8_matmul else settings.base_weights
    dense_only = settings.use_dora or settings.lora.moves_base_weight
    return mp.make_plan(mp.diffusion_model_facts(dm), tier=settings.vram, base_weights=base_weights,
                        gpu_weights_gb=settings.gpu_weights_gb, image_tokens=(resolution // 16) ** 2,
                        batch=settings.batch_size, checkpointing=settings.gradient_checkpointing,
                        trainable_params=trainer("lora").trainable_count(dm, settings.lora), available=available,
                        free_ram=free_ram, on_gpu=on_gpu, dense_only=dense_only,
                        nf4_available=not trainer("optional_packages").bitsandbytes_error())


def verdict(plan, loaded: str) -> str:
    """The plan in the words a user decides by: fits / needs fp8 / needs nf4 / needs streaming (``loaded``: the
    format the weights were loaded in, what 'as loaded' means)."""
    if plan.offloaded:
        fmt = loaded if plan.base_weights == "as loaded" else plan.base_weights
        return (f"needs streaming: {plan.gpu_weight_bytes / GIB:.1f} of {plan.weight_bytes / GIB:.1f} GiB of {fmt} "
                "base weights in VRAM, the rest streamed from RAM each step (slower, same result)")
    if plan.base_weights == "as loaded":
        return "fits as loaded"
    if plan.base_weights == "fp8":
        return "needs fp8 base weights (the trainer picks them itself)"
    return "needs nf4 base weights (QLoRA; the trainer picks them itself)"


def flux_dev_lines(trainer, settings, resolution: int, available: int, free_ram: int, on_gpu: bool = True) -> list:
    """One line per way of loading FLUX.1-dev: the verdict, then the plan as the train node prints it."""
    mp = trainer("memory_plan")
    lines = []
    for weight_dtype, dtype, loaded in LOADS:
        head = f"FLUX.1-dev loaded with weight_dtype {weight_dtype}: "
        try:
            plan = plan_for(trainer, settings, meta_flux_dev(dtype), resolution, available, free_ram, on_gpu)
        except mp.NotEnoughMemory as e:
            lines.append(head + f"does not fit: {e}")
            continue
        lines.append(head + verdict(plan, loaded))
        lines.append("    " + plan.describe())
    return lines
