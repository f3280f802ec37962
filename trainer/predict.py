"""One FLUX.1 velocity prediction, as ComfyUI's ``BaseModel._apply_model`` calls the diffusion model.

Calling the diffusion model directly (instead of ``apply_model``, which returns x_t - sigma * v) gives
the velocity without dividing by sigma. Inputs are cast exactly as ``_apply_model`` casts them.
"""
import torch


def predict_velocity(patcher, xt, sigmas, context, pooled, guidance: float, reference=None):
    """The velocity FLUX.1 predicts for ``xt``; ``reference`` (B, 16, h, w), a Kontext control image's latent in the
    model's latent space, enters as ComfyUI's ``ref_latents`` (what a ReferenceLatent node adds to the conditioning):
    its tokens follow the image's with Kontext's position offsets, and the output covers the image's tokens only."""
    base = patcher.model
    dtype = base.manual_cast_dtype if base.manual_cast_dtype is not None else base.get_dtype()
    device = xt.device
    model_sampling = patcher.get_model_object("model_sampling")
    options = dict(patcher.model_options.get("transformer_options", {}))
    g = None
    if base.diffusion_model.params.guidance_embed:
        g = torch.full((xt.shape[0],), float(guidance), device=device, dtype=dtype)
    out = base.diffusion_model(
        xt.to(dtype), model_sampling.timestep(sigmas.to(device)).float(),
        context=context.to(device=device, dtype=dtype), y=pooled.to(device=device, dtype=dtype),
        guidance=g, transformer_options=options,
        **({} if reference is None else {"ref_latents": [reference.to(device=device, dtype=dtype)]}))
    return out.float()
