"""Recognise a ComfyUI FLUX.1 MODEL and describe it; refuse everything else with a clear message."""
from dataclasses import dataclass

import comfy.ldm.flux.model
import comfy.model_base

from .base_weights import foreign_weight_format


class NotAFluxModel(ValueError):
    pass


@dataclass(frozen=True)
class FluxInfo:
    hidden_size: int
    depth: int
    depth_single_blocks: int
    unet_config: dict
    weight_dtype: str
    compute_dtype: str
    variant: str = "dev"    # 'dev' (guidance embedding) or 'schnell' (none: FLUX.1-schnell and its derivatives)


def flux_info(model_patcher) -> FluxInfo:
    """Checks that ``model_patcher`` (a ComfyUI MODEL) holds a FLUX.1 diffusion model and describes it."""
    base = getattr(model_patcher, "model", None)
    dm = getattr(base, "diffusion_model", None)
    name = type(base).__name__ if base is not None else type(model_patcher).__name__
    if not isinstance(base, comfy.model_base.Flux) or type(dm) is not comfy.ldm.flux.model.Flux:
        raise NotAFluxModel(
            f"FluxLoRATrain trains FLUX.1 LoRAs only, but the MODEL input is a {name} "
            f"({type(dm).__name__ if dm is not None else 'no diffusion model'}). Load FLUX.1-dev with "
            "'Load Diffusion Model' (UNETLoader) or a Flux checkpoint and connect that MODEL.")
    foreign = foreign_weight_format(dm)
    if foreign:
        raise NotAFluxModel(
            f"This MODEL stores its weights as {foreign} (a GGUF loader pack), which training cannot read. Load "
            "flux1-dev (bf16 or fp8) with 'Load Diffusion Model' (UNETLoader) instead; on a small GPU set Flux LoRA "
            "Train's base_weights to 'nf4' (a 4-bit QLoRA copy, like Q4 GGUF in size) or leave vram on auto.")
    p = dm.params
    unsupported = [k for k in ("global_modulation", "mlp_silu_act", "yak_mlp", "txt_norm") if getattr(p, k, False)]
    if unsupported or p.txt_ids_dims:
        raise NotAFluxModel(
            f"This MODEL is a Flux-family model with {', '.join(unsupported) or 'text position ids'} "
            "(FLUX.2 / Ovis style), which FluxLoRATrain does not support; use FLUX.1-dev.")
    if dm.in_channels != p.out_channels * p.patch_size ** 2:
        raise NotAFluxModel(
            f"This MODEL takes {dm.in_channels // p.patch_size ** 2} latent channels in but gives {p.out_channels} out "
            "(FLUX.1 Fill / Depth / Canny style, with extra image conditioning), which FluxLoRATrain does not support; "
            "use FLUX.1-dev.")
    weight = next(dm.parameters())
    compute = base.manual_cast_dtype or weight.dtype
    return FluxInfo(hidden_size=p.hidden_size, depth=p.depth,
                    depth_single_blocks=p.depth_single_blocks,
                    unet_config={k: v for k, v in base.model_config.unet_config.items()
                                 if isinstance(v, (bool, int, float, str, list, tuple, type(None)))},
                    weight_dtype=str(weight.dtype).replace("torch.", ""),
                    compute_dtype=str(compute).replace("torch.", ""),
                    variant="dev" if p.guidance_embed else "schnell")


SCHNELL_ADAPTER = "FLUX.1-schnell-training-adapter"


def check_schnell(info: FluxInfo, settings):
    """FLUX.1-schnell trains only with an assistant LoRA (ai-toolkit's method: its training adapter absorbs the drift
    that would otherwise break schnell's few-step distillation), and without a guidance input."""
    if info.variant != "schnell":
        return
    if not settings.assistant_lora.strip():
        raise ValueError(
            "This MODEL has no guidance embedding (FLUX.1-schnell): training it directly breaks its few-step "
            f"distillation. Download ostris' {SCHNELL_ADAPTER} (huggingface.co/ostris/{SCHNELL_ADAPTER}) into "
            "models/loras and set assistant_lora to it on the Advanced Settings node (it is used while training only, "
            "as ai-toolkit does), or load flux1-dev.")
    if settings.train_guidance != 1.0:
        raise ValueError(f"train_guidance is {settings.train_guidance:g}, but FLUX.1-schnell has no guidance input, so "
                         "it would have no effect: leave it at 1.0.")


def check_clip(clip, model_patcher):
    """The CLIP must be FLUX.1's CLIP-L + T5-XXL pair whose widths fit the MODEL (checked before any encoding)."""
    import comfy.text_encoders.flux
    cond = getattr(clip, "cond_stage_model", None)
    if not isinstance(cond, comfy.text_encoders.flux.FluxClipModel):
        raise ValueError(f"The CLIP input is a {type(cond).__name__} text encoder; FLUX.1 needs CLIP-L + T5-XXL: load "
                         "them with 'DualCLIPLoader' (clip_l + t5xxl, type 'flux') and connect that CLIP.")
    p = model_patcher.model.diffusion_model.params
    t5_width = getattr(getattr(getattr(cond.t5xxl, "transformer", None), "shared", None), "weight", None)
    if t5_width is not None and t5_width.shape[1] != p.context_in_dim:
        raise ValueError(f"The CLIP's T5 gives {t5_width.shape[1]}-wide text features but this FLUX model reads "
                         f"{p.context_in_dim}: load the T5-XXL that belongs to FLUX.1 (t5xxl_fp16/fp8) in DualCLIPLoader.")


def check_vae(vae, model_patcher):
    """The VAE must make the MODEL's 16-channel latents (checked before any encoding)."""
    channels = getattr(vae, "latent_channels", None)
    wanted = model_patcher.model.diffusion_model.params.out_channels
    if channels is not None and channels != wanted:
        raise ValueError(f"The VAE makes {channels}-channel latents; FLUX.1 needs its own {wanted}-channel VAE: load "
                         "ae.safetensors with 'Load VAE' and connect that VAE.")
