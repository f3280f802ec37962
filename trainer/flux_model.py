"""Recognise the Flux-family MODEL ComfyUI loaded (FLUX.1 dev/schnell, FLUX.2 dev/klein, Chroma) and describe it;
refuse everything else with a clear message.

All three families run ComfyUI's own ``comfy.ldm.flux.layers`` double/single blocks, which is what the trainer trains
through. They differ in how the blocks are modulated (per block in FLUX.1; shared layers in FLUX.2; Chroma's
approximator), in the text conditioning (CLIP-L + T5 / Mistral-3 or Qwen3 / T5 alone), the latents (16 or 128
channels) and the guidance input (a distilled-guidance embedding, none, or Chroma's approximator input at 0)."""
from dataclasses import dataclass

import comfy.ldm.flux.model
import comfy.model_base

from .base_weights import foreign_weight_format

FAMILY_TITLES = {"flux1": "FLUX.1", "flux2": "FLUX.2", "chroma": "Chroma"}


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
    variant: str = "dev"    # FLUX.1: 'dev' (guidance embedding) or 'schnell' (none); FLUX.2: 'dev' or 'klein'; 'chroma'
    family: str = "flux1"   # 'flux1', 'flux2' or 'chroma'

    @property
    def title(self) -> str:
        return f"{FAMILY_TITLES[self.family]} {self.variant}" if self.family != "chroma" else "Chroma"


def _chroma_class():
    import comfy.ldm.chroma.model
    return comfy.ldm.chroma.model.Chroma


def model_family(base, dm) -> str:
    """'flux1', 'flux2' or 'chroma' from ComfyUI's own model classes; '' for anything else."""
    chroma_base = getattr(comfy.model_base, "Chroma", None)
    if chroma_base is not None and type(base) is chroma_base and type(dm) is _chroma_class():
        return "chroma"
    flux2_base = getattr(comfy.model_base, "Flux2", None)
    if flux2_base is not None and type(base) is flux2_base and type(dm) is comfy.ldm.flux.model.Flux:
        return "flux2"
    if isinstance(base, comfy.model_base.Flux) and type(dm) is comfy.ldm.flux.model.Flux:
        return "flux1"
    return ""


def flux_info(model_patcher) -> FluxInfo:
    """Checks that ``model_patcher`` (a ComfyUI MODEL) holds a diffusion model the trainer supports and describes it."""
    base = getattr(model_patcher, "model", None)
    dm = getattr(base, "diffusion_model", None)
    name = type(base).__name__ if base is not None else type(model_patcher).__name__
    family = model_family(base, dm) if base is not None else ""
    if not family:
        raise NotAFluxModel(
            f"Flux LoRA Train trains FLUX.1, FLUX.2 and Chroma LoRAs only, but the MODEL input is a {name} "
            f"({type(dm).__name__ if dm is not None else 'no diffusion model'}). Load FLUX.1-dev, FLUX.2 [klein] or "
            "Chroma with 'Load Diffusion Model' (UNETLoader) or a checkpoint loader and connect that MODEL.")
    foreign = foreign_weight_format(dm)
    if foreign:
        raise NotAFluxModel(
            f"This MODEL stores its weights as {foreign} (a GGUF loader pack), which training cannot read. Load the "
            "model (bf16 or fp8) with 'Load Diffusion Model' (UNETLoader) instead; on a small GPU set Flux LoRA "
            "Train's base_weights to 'nf4' (a 4-bit QLoRA copy, like Q4 GGUF in size) or leave vram on auto.")
    p = dm.params
    if family == "flux1":
        _check_flux1(dm, p)
        variant = "dev" if p.guidance_embed else "schnell"
    elif family == "flux2":
        _check_flux2(p)
        variant = "dev" if p.guidance_embed else "klein"
    else:
        variant = "chroma"
    weight = next(dm.parameters())
    compute = base.manual_cast_dtype or weight.dtype
    return FluxInfo(hidden_size=p.hidden_size, depth=p.depth,
                    depth_single_blocks=p.depth_single_blocks,
                    unet_config={k: v for k, v in base.model_config.unet_config.items()
                                 if isinstance(v, (bool, int, float, str, list, tuple, type(None)))},
                    weight_dtype=str(weight.dtype).replace("torch.", ""),
                    compute_dtype=str(compute).replace("torch.", ""),
                    variant=variant, family=family)


def _check_flux1(dm, p):
    unsupported = [k for k in ("global_modulation", "mlp_silu_act", "yak_mlp", "txt_norm") if getattr(p, k, False)]
    if unsupported or p.txt_ids_dims:
        raise NotAFluxModel(
            f"This MODEL is a Flux-family model with {', '.join(unsupported) or 'text position ids'} "
            "(Ovis / LongCat style), which Flux LoRA Train does not support; use FLUX.1, FLUX.2 or Chroma.")
    if dm.in_channels != p.out_channels * p.patch_size ** 2:
        raise NotAFluxModel(
            f"This MODEL takes {dm.in_channels // p.patch_size ** 2} latent channels in but gives {p.out_channels} out "
            "(FLUX.1 Fill / Depth / Canny style, with extra image conditioning), which Flux LoRA Train does not "
            "support; use FLUX.1-dev.")


def _check_flux2(p):
    if not (p.global_modulation and p.mlp_silu_act) or getattr(p, "yak_mlp", False) or getattr(p, "txt_norm", False):
        raise NotAFluxModel("This MODEL is a FLUX.2-like model with a layout Flux LoRA Train does not know "
                            "(expected shared modulation and SwiGLU MLPs); use FLUX.2 dev or klein.")


SCHNELL_ADAPTER = "FLUX.1-schnell-training-adapter"


def check_schnell(info: FluxInfo, settings):
    """FLUX.1-schnell trains only with an assistant LoRA (ai-toolkit's method: its training adapter absorbs the drift
    that would otherwise break schnell's few-step distillation), and without a guidance input."""
    if info.family == "flux1" and info.variant == "schnell" and not settings.assistant_lora.strip():
        raise ValueError(
            "This MODEL has no guidance embedding (FLUX.1-schnell): training it directly breaks its few-step "
            f"distillation. Download ostris' {SCHNELL_ADAPTER} (huggingface.co/ostris/{SCHNELL_ADAPTER}) into "
            "models/loras and set assistant_lora to it on the Advanced Settings node (it is used while training only, "
            "as ai-toolkit does), or load flux1-dev.")
    if not has_guidance_input(info) and settings.train_guidance != 1.0:
        raise ValueError(f"train_guidance is {settings.train_guidance:g}, but {info.title} has no distilled-guidance "
                         "input, so it would have no effect: leave it at 1.0.")


def has_guidance_input(info: FluxInfo) -> bool:
    """Whether the model has FLUX's distilled-guidance embedding (FLUX.1-dev, FLUX.2-dev)."""
    return info.family != "chroma" and info.variant == "dev"


def _text_encoder_module(cond):
    """The one text encoder inside ComfyUI's SD1ClipModel-style wrapper (Flux2TEModel, PixArtT5XXL)."""
    return getattr(cond, getattr(cond, "clip", ""), None)


def check_clip(clip, model_patcher):
    """The CLIP must be the text encoder(s) of the MODEL's family, with widths that fit the MODEL (checked before any
    encoding)."""
    import comfy.text_encoders.flux
    family = model_family(model_patcher.model, model_patcher.model.diffusion_model)
    cond = getattr(clip, "cond_stage_model", None)
    p = model_patcher.model.diffusion_model.params
    if family == "flux1":
        if not isinstance(cond, comfy.text_encoders.flux.FluxClipModel):
            raise ValueError(f"The CLIP input is a {type(cond).__name__} text encoder; FLUX.1 needs CLIP-L + T5-XXL: "
                             "load them with 'DualCLIPLoader' (clip_l + t5xxl, type 'flux') and connect that CLIP.")
        _check_t5_width(cond.t5xxl, p.context_in_dim, "FLUX.1", "in DualCLIPLoader")
    elif family == "chroma":
        import comfy.text_encoders.pixart_t5
        if not isinstance(cond, comfy.text_encoders.pixart_t5.PixArtT5XXL):
            raise ValueError(f"The CLIP input is a {type(cond).__name__} text encoder; Chroma needs T5-XXL alone: load it "
                             "with 'Load CLIP' (CLIPLoader, type 'chroma') and connect that CLIP.")
        _check_t5_width(cond.t5xxl, p.context_in_dim, "Chroma", "with 'Load CLIP' (type 'chroma')")
    elif family == "flux2":
        if not isinstance(cond, comfy.text_encoders.flux.Flux2TEModel):
            wanted = ("Qwen3 (qwen_3_4b for klein 4B, qwen_3_8b for klein 9B)" if not p.guidance_embed
                      else "Mistral-3 Small (mistral_3_small_flux2)")
            raise ValueError(f"The CLIP input is a {type(cond).__name__} text encoder; this FLUX.2 MODEL needs {wanted}: "
                             "load it with 'Load CLIP' (CLIPLoader, type 'flux2') and connect that CLIP.")
        llm = _text_encoder_module(cond)
        taps = getattr(llm, "layer", None)   # FLUX.2 stacks hidden layers of the LLM (3: ComfyUI's layer list)
        layers = len(taps) if isinstance(taps, (list, tuple)) else 3
        width = getattr(getattr(getattr(getattr(llm, "transformer", None), "model", None), "embed_tokens", None),
                        "weight", None)
        if width is not None and width.shape[1] * layers != p.context_in_dim:
            raise ValueError(f"The CLIP's text encoder gives {width.shape[1] * layers}-wide text features but this "
                             f"FLUX.2 model reads {p.context_in_dim}: klein 4B needs qwen_3_4b, klein 9B qwen_3_8b, "
                             "FLUX.2 dev the Mistral-3 Small text encoder.")


def _check_t5_width(t5, wanted: int, title: str, how: str):
    width = getattr(getattr(getattr(t5, "transformer", None), "shared", None), "weight", None)
    if width is not None and width.shape[1] != wanted:
        raise ValueError(f"The CLIP's T5 gives {width.shape[1]}-wide text features but this {title} model reads "
                         f"{wanted}: load the T5-XXL that belongs to it (t5xxl_fp16/fp8) {how}.")


def latent_channels(model_patcher) -> int:
    return model_patcher.model.latent_format.latent_channels


def latent_downscale(model_patcher) -> int:
    return getattr(model_patcher.model.latent_format, "spacial_downscale_ratio", 8)


def check_vae(vae, model_patcher):
    """The VAE must make the MODEL's latents (16 channels for FLUX.1 / Chroma, 128 for FLUX.2; checked before any
    encoding)."""
    channels = getattr(vae, "latent_channels", None)
    wanted = latent_channels(model_patcher)
    family = model_family(model_patcher.model, model_patcher.model.diffusion_model)
    if channels is not None and channels != wanted:
        which = "flux2-vae.safetensors" if family == "flux2" else "ae.safetensors (FLUX.1's VAE)"
        raise ValueError(f"The VAE makes {channels}-channel latents; this {FAMILY_TITLES.get(family, 'Flux')} model needs "
                         f"{wanted}-channel latents: load {which} with 'Load VAE' and connect that VAE.")
