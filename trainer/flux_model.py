"""Recognise a ComfyUI FLUX.1 MODEL and describe it; refuse everything else with a clear message."""
from dataclasses import dataclass

import comfy.ldm.flux.model
import comfy.model_base


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
    p = dm.params
    unsupported = [k for k in ("global_modulation", "mlp_silu_act", "yak_mlp", "txt_norm") if getattr(p, k, False)]
    if unsupported or p.txt_ids_dims:
        raise NotAFluxModel(
            f"This MODEL is a Flux-family model with {', '.join(unsupported) or 'text position ids'} "
            "(FLUX.2 / Ovis style), which FluxLoRATrain does not support; use FLUX.1-dev.")
    weight = next(dm.parameters())
    compute = base.manual_cast_dtype or weight.dtype
    return FluxInfo(hidden_size=p.hidden_size, depth=p.depth,
                    depth_single_blocks=p.depth_single_blocks,
                    unet_config={k: v for k, v in base.model_config.unet_config.items()
                                 if isinstance(v, (bool, int, float, str, list, tuple, type(None)))},
                    weight_dtype=str(weight.dtype).replace("torch.", ""),
                    compute_dtype=str(compute).replace("torch.", ""))
