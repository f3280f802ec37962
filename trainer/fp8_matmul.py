"""Matrix multiplications of the frozen fp8 base weights in fp8 (``torch._scaled_mm``), for training.

ComfyUI's own fast fp8 path (``fp8_e4m3fn_fast``) has no backward: ``_scaled_mm`` has no derivative and ComfyUI clamps
the layer input in place, so under autograd it falls back to casting the weight to bf16 for every call. Here the forward
rounds the layer input to fp8 with one scale per tensor (its absolute maximum maps to fp8's largest value, computed on
the device: no host sync) and multiplies in fp8; the backward needs only the input's gradient (the base weight is
frozen) and computes it with the weight cast to the gradient's dtype, exactly as the usual fp8 path does. So the
forward and the recompute of gradient checkpointing run on fp8 tensor cores, the backward as before. (On the CPU, which
has no fp8 compute, the same product is computed in float32: see ``cpu_scaled_mm``.)
"""
import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)


class _Fp8Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        rows = x.reshape(-1, x.shape[-1])
        scale = (rows.abs().amax().float() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
        quantized = (rows / scale.to(rows.dtype)).to(FP8)
        if x.device.type == "cpu":
            out = cpu_scaled_mm(quantized, weight, scale, bias, x.dtype)
        else:
            out = torch._scaled_mm(quantized, weight.t(), scale_a=scale,
                                   scale_b=torch.ones((), device=x.device, dtype=torch.float32),
                                   bias=None if bias is None else bias.to(x.dtype), out_dtype=x.dtype)
        ctx.save_for_backward(weight)
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        weight, = ctx.saved_tensors
        return grad @ weight.to(grad.dtype), None, None


def cpu_scaled_mm(quantized, weight, scale, bias, out_dtype):
    """``torch._scaled_mm(quantized, weight.T, scale_a=scale, scale_b=1, bias)`` computed the way its kernel does (the
    exact fp8 products summed in float32, then scaled, biased and cast), with float32 matmuls: torch's CPU kernel is a
    slow reference loop (measured 15 s for one 576x512x1536 product on a 2-core Xeon VM with torch 2.13, against 7 ms
    for the bf16 matmul), and CPUs have no fp8 compute to gain anything from it. Tested equal to _scaled_mm."""
    out = (quantized.float() @ weight.float().t()) * scale
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """``x @ weight.T + bias`` for an fp8 (e4m3fn) ``weight`` (out, in), computed in fp8; differentiable in ``x``."""
    return _Fp8Linear.apply(x, weight, bias)


def fast_forward(layer):
    """A ``forward`` for ``layer`` (a ComfyUI Linear of a training copy, fp8 weight, no scale): the fp8 matmul while its
    weight is on the input's device and unpatched; otherwise (a layer streamed from RAM by ComfyUI's partial loading,
    weight patches) the layer's own forward, which casts the weight."""
    own = type(layer).forward.__get__(layer)

    def forward(x):
        weight = layer.weight
        if (weight.dtype != FP8 or weight.device != x.device or getattr(layer, "weight_function", None)
                or getattr(layer, "bias_function", None)
                or x.shape[-1] % 16 or weight.shape[0] % 16):
            return own(x)
        bias = layer.bias
        if bias is not None and bias.device != x.device:
            return own(x)
        return fp8_linear(x, weight, bias)

    return forward


def supported(device) -> bool:
    """Whether ``device`` runs fp8 matmuls: the CPU (slowly; for tests) or a GPU ComfyUI says has fp8 compute."""
    import comfy.model_management as mm
    device = torch.device(device)
    return device.type == "cpu" or bool(mm.supports_fp8_compute(device))
