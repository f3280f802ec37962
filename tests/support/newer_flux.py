"""A stand-in, for tests, for the Flux code of ComfyUI releases after v0.33, on the ComfyUI at hand (v0.8.0 or v0.33.0).

Newer ComfyUI routes the modulation norms of every Flux block and of the final layer through ``modulated_norm``, which
calls comfy-kitchen's fused ``adaln`` unless ``comfy.model_management.in_training`` is set, and RoPE through
comfy-kitchen's kernel on the same condition; neither kernel has an autograd formula. Each block also gets a
``comfy_attention`` child (a ``ComfyAttention``) that ComfyUI's attention uses as ``preferred_attention``: a model
file can select comfy-kitchen's int8 attention there, which approximates attention and has no backward either.

:func:`install` gives the installed ComfyUI the same properties, computing the same values as before:

- the modulation norms (Flux's LayerNorms without weights, which the pack's block forward calls too) and
  ``comfy.ldm.flux.math.apply_rope`` / ``apply_rope1``: while the flag is not set they run as such a kernel looks to
  autograd: nothing is saved for backward (so a checkpointed block recomputed outside the flag saves other tensors
  than its forward did, which torch's checkpoint refuses) and backward through them raises, with the error the real
  kernels give. This is stricter than the newer ComfyUI, whose norm modules stay differentiable (only its own blocks
  call the fused kernel): here the pack's block forward, which calls the norm modules, depends on the flag as well;
- on a ComfyUI without the flag (v0.8.0) the flag is added, set to False, as the newer ComfyUI has it (the pack finds
  features, not versions, so it then uses it).

:func:`install_preferred_attention` gives every block a ``comfy_attention`` whose ``function`` is an int8-like attention
(q, k, v rounded to 8 bits) without backward, and makes ComfyUI's own blocks call attention the way the newer ones do
(``preferred_attention=self.comfy_attention``, called with ComfyUI's attention signature).
"""
import contextvars

import torch


class _Kernel(torch.autograd.Function):
    """A comfy-kitchen op as autograd sees one without an autograd formula: ``fn(*tensors)`` is computed without
    recording or saving anything for backward, and the backward raises."""

    @staticmethod
    def forward(ctx, name, fn, *tensors):
        ctx.name = name
        return fn(*tensors)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(f"Trying to backward through {ctx.name} but no autograd formula was registered "
                           "(tests/support/newer_flux.py: it ran while comfy.model_management.in_training was not set)")


def install(monkeypatch):
    """The modulation norms and RoPE of the ComfyUI at hand without backward unless the training flag is set."""
    import comfy.ldm.flux.math as flux_math
    import comfy.model_management as mm
    import comfy.ops
    if not hasattr(mm, "in_training"):
        monkeypatch.setattr(mm, "in_training", False, raising=False)
    layer_norm = comfy.ops.disable_weight_init.LayerNorm   # manual_cast.LayerNorm inherits its forward
    norm_forward = layer_norm.forward

    def modulation_norm(self, x):
        if self.weight is None and not mm.in_training:   # Flux's modulation norms are the LayerNorms without weights
            return _Kernel.apply("comfy_kitchen.adaln.default (stand-in)", lambda t: norm_forward(self, t), x)
        return norm_forward(self, x)
    monkeypatch.setattr(layer_norm, "forward", modulation_norm)

    for name in ("apply_rope", "apply_rope1"):
        monkeypatch.setattr(flux_math, name, _rope(getattr(flux_math, name), mm, f"comfy_kitchen.{name} (stand-in)"))


def _rope(original, mm, name):
    def rope(*args):
        return original(*args) if mm.in_training else _Kernel.apply(name, original, *args)
    return rope


class StandInComfyAttention(torch.nn.Module):
    """The newer ``ComfyAttention``'s interface: ``function`` is None (ComfyUI's attention) or the attention to use,
    called as ComfyUI's attention functions are: ``function(q, k, v, heads, mask=..., skip_reshape=..., ...)``."""

    def __init__(self, function=None):
        super().__init__()
        self.config = {"attention": "comfy_kitchen_int8"} if function is not None else None
        self.function = function


def int8_like_attention(calls):
    """An attention that rounds q, k and v to 8 bits (one scale per tensor) first, like comfy-kitchen's int8 attention,
    and has no backward. Appends torch.is_grad_enabled() to ``calls`` at every call."""
    from comfy.ldm.modules.attention import optimized_attention

    def rounded(t):
        scale = t.abs().amax().clamp(min=1e-12) / 127
        return (t / scale).round().clamp(-127, 127) * scale

    def attention(q, k, v, heads, mask=None, skip_reshape=False, transformer_options=None, **kwargs):
        calls.append(torch.is_grad_enabled())
        return _Kernel.apply("comfy_kitchen.int8_attention (stand-in)", lambda *qkv: optimized_attention(
            *map(rounded, qkv), heads, mask=mask, skip_reshape=skip_reshape,
            transformer_options=transformer_options or {}), q, k, v)
    return attention


_CURRENT_BLOCK = contextvars.ContextVar("newer_flux_block", default=None)


def install_preferred_attention(monkeypatch, diffusion_model, function):
    """Every block of ``diffusion_model`` gets a ``comfy_attention`` with ``function``; ComfyUI's own blocks pass it to
    attention as ``preferred_attention``, as the newer blocks do."""
    import comfy.ldm.flux.layers as flux_layers
    import comfy.ldm.flux.math as flux_math
    for block in list(diffusion_model.double_blocks) + list(diffusion_model.single_blocks):
        monkeypatch.setattr(block, "comfy_attention", StandInComfyAttention(function), raising=False)
    for cls in (flux_layers.DoubleStreamBlock, flux_layers.SingleStreamBlock):
        monkeypatch.setattr(cls, "forward", _remembering_block(cls.forward))

    def attention(q, k, v, pe, mask=None, transformer_options={}):
        """The newer ``comfy.ldm.flux.math.attention(..., preferred_attention=block.comfy_attention)``."""
        if pe is not None:
            q, k = flux_math.apply_rope(q, k, pe)
        block = _CURRENT_BLOCK.get()
        preferred = getattr(block, "comfy_attention", None)
        if preferred is not None and preferred.function is not None:
            return preferred.function(q, k, v, q.shape[1], skip_reshape=True, mask=mask,
                                      transformer_options=transformer_options)
        return flux_math.optimized_attention(q, k, v, q.shape[1], skip_reshape=True, mask=mask,
                                             transformer_options=transformer_options)
    monkeypatch.setattr(flux_layers, "attention", attention)


def _remembering_block(forward):
    def run(self, *args, **kwargs):
        token = _CURRENT_BLOCK.set(self)
        try:
            return forward(self, *args, **kwargs)
        finally:
            _CURRENT_BLOCK.reset(token)
    return run
