"""RoPE with a backward pass, for the training forward only.

ComfyUI v0.8.0 applies Flux's rotary embedding with comfy-kitchen's ``apply_rope`` op, which has no
autograd formula. RoPE rotates each (even, odd) pair of q/k by a 2x2 matrix R, so its gradient is the
same op with the transposed matrices: dL/dx = R^T dL/dy. This Function runs ComfyUI's own op (whatever
``comfy.ldm.flux.math.apply_rope`` is: the kitchen kernel or the pure torch fallback) both ways, so
inference for every other node is untouched and, on ComfyUI without a training flag (v0.8.0), training keeps the fast
kernel. ComfyUI >= 0.14 picks the op by its training flag (pure torch in training mode): both ways run in training
mode, whoever calls them, so the backward rotates with the op the forward used.
"""
import torch

import comfy.ldm.flux.math as flux_math

from .comfy_features import comfy_training_mode


class _ApplyRope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, freqs_cis):
        ctx.save_for_backward(freqs_cis)
        with comfy_training_mode():
            return flux_math.apply_rope(q, k, freqs_cis)

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        (freqs_cis,) = ctx.saved_tensors
        transposed = freqs_cis.transpose(-1, -2).contiguous()
        with comfy_training_mode():
            gq, gk = flux_math.apply_rope(grad_q.contiguous(), grad_k.contiguous(), transposed)
        return gq, gk, None


def apply_rope(q: torch.Tensor, k: torch.Tensor, freqs_cis: torch.Tensor):
    """Differentiable ``comfy.ldm.flux.math.apply_rope``; same layout and result."""
    return _ApplyRope.apply(q, k, freqs_cis)
