"""One velocity prediction of a Flux-family model, as ComfyUI's ``BaseModel._apply_model`` calls the diffusion model.

Calling the diffusion model directly (instead of ``apply_model``, which returns x_t - sigma * v) gives the velocity
without dividing by sigma. Inputs are cast exactly as ``_apply_model`` casts them, and each family gets the inputs its
ComfyUI model class gives it at inference (``extra_conds``): FLUX.1 the CLIP-L pooled vector and distilled guidance,
FLUX.2 guidance only on dev, Chroma a guidance input of 0. Text features come as the model reads them
(:func:`model_context`, applied once when captions are encoded).

The prediction is made in ComfyUI's training mode (:func:`comfy_training_mode`), whoever calls it: ComfyUI >= 0.14
computes Flux RoPE, and ComfyUI after v0.33 also the modulation norms, with comfy-kitchen kernels that have no backward
unless that mode is set, and the parts of the forward that gradient checkpointing does not recompute (the final
layer, the embedders) are recorded for backward here and now. Sampling never comes here (it goes through ComfyUI's
sampler) and keeps ComfyUI's fast paths."""
import torch

import comfy.model_base

from .comfy_features import comfy_training_mode


def model_context(base, context: torch.Tensor) -> torch.Tensor:
    """The text features (B, tokens, dim) as ``base``'s own ``extra_conds`` hands them to the diffusion model at
    inference (FLUX.2: left-padded to 512 tokens; the others unchanged)."""
    return base.extra_conds(cross_attn=context, pooled_output=None)["c_crossattn"].cond


def is_chroma(base) -> bool:
    chroma = getattr(comfy.model_base, "Chroma", None)
    return chroma is not None and isinstance(base, chroma)


def predict_velocity(patcher, xt, sigmas, context, pooled, guidance: float, references=()):
    """The velocity the model predicts for ``xt``. ``pooled`` is FLUX.1's CLIP-L vector (ignored by the families
    without one); ``guidance`` feeds FLUX's distilled-guidance embedding where the model has one. ``references``, the
    latents (B, C, h, w) of an edit pair's reference images in the model's latent space, enter as ComfyUI's
    ``ref_latents`` list, in order (what ReferenceLatent nodes chained once per image add to the conditioning): ComfyUI's
    own Flux forward places their tokens after the image's with the family's position scheme (FLUX.1 Kontext's
    offsets, FLUX.2's time index 10, 20, ...), and the output covers the image's tokens only."""
    base = patcher.model
    dm = base.diffusion_model
    dtype = base.manual_cast_dtype if base.manual_cast_dtype is not None else base.get_dtype()
    device = xt.device
    model_sampling = patcher.get_model_object("model_sampling")
    options = dict(patcher.model_options.get("transformer_options", {}))
    kwargs = {}
    if getattr(dm, "vector_in", None) is not None:
        kwargs["y"] = pooled.to(device=device, dtype=dtype)
    if is_chroma(base):   # Chroma's approximator reads a guidance value; ComfyUI gives it 0 unless a node sets one
        kwargs["guidance"] = torch.zeros((xt.shape[0],), device=device, dtype=dtype)
    elif getattr(dm.params, "guidance_embed", False):
        kwargs["guidance"] = torch.full((xt.shape[0],), float(guidance), device=device, dtype=dtype)
    if references is not None and len(references):
        kwargs["ref_latents"] = [r.to(device=device, dtype=dtype) for r in references]
    with comfy_training_mode():
        out = dm(xt.to(dtype), model_sampling.timestep(sigmas.to(device)).float(),
                 context=context.to(device=device, dtype=dtype), transformer_options=options, **kwargs)
    return out.float()
