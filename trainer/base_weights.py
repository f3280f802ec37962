"""The frozen base weights a run trains against: the MODEL as ComfyUI loaded it, or a training copy in fp8 or NF4.

A training copy is a second diffusion model that shares no tensor with the MODEL: every ``Linear`` of the diffusion
model becomes fp8 (ComfyUI's own layer, weights cast to the compute dtype on the fly, as ComfyUI runs fp8 models) or
NF4 with double quantisation (bitsandbytes' ``Linear4bit``: QLoRA), the small rest (norms, embedder scales) is copied.
It is built one layer at a time on the compute device from the MODEL's effective weights (fp8 / mixed-precision
weights dequantised, weight patches of a stacked LoRA applied), and wrapped in its own ModelPatcher, so ComfyUI's
memory management sees it and can evict it for sampling. The MODEL is only read: ComfyUI moves it out of VRAM to make
room (it is reloaded when a node next uses it) and it stays bit-identical.
"""
import copy

import torch

import comfy.model_management as mm
import comfy.model_patcher

from .fp8_matmul import fast_forward

BASE_WEIGHTS = ("auto", "as loaded", "fp8", "nf4")
COPY_FORMATS = ("fp8", "nf4")


class UnsupportedWeights(ValueError):
    pass


def foreign_weight_format(diffusion_model) -> str:
    """The name of a weight format from another node pack that training cannot read (e.g. ComfyUI-GGUF's GGMLTensor),
    or ''."""
    for module in diffusion_model.modules():
        weight = getattr(module, "weight", None)
        kind = type(weight).__name__ if weight is not None else ""
        if "GGML" in kind or "GGUF" in kind or "GGUF" in type(module).__module__.upper():
            return kind or type(module).__name__
    return ""


def dense_weight(module, key: str, patches: dict, device) -> torch.Tensor:
    """``module``'s weight as the MODEL computes with it, in float32 on ``device``: dequantised (ComfyUI's
    mixed-precision / scaled fp8 layers) and with the MODEL's weight patches (a LoRA stacked before training) applied."""
    from comfy.lora import calculate_weight
    convert = getattr(module, "convert_weight", None)
    weight = module.weight if convert is None else convert(module.weight)
    weight = weight.detach().to(device=device, dtype=torch.float32, copy=True)
    if key in patches:
        weight = calculate_weight(patches[key], weight, key)
    return weight


def _dense_bias(module, key, patches, device, dtype):
    if module.bias is None:
        return None
    bias = module.bias.detach().to(device=device, dtype=torch.float32, copy=True)
    if key in patches:
        from comfy.lora import calculate_weight
        bias = calculate_weight(patches[key], bias, key)
    return torch.nn.Parameter(bias.to(dtype), requires_grad=False)


def _nf4_linear(module, weight, bias, compute_dtype, device):
    import bitsandbytes as bnb
    layer = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=False, compute_dtype=compute_dtype,
                              compress_statistics=True, quant_type="nf4", device="meta")
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=True, quant_type="nf4",
                                     module=layer)._quantize(device)
    layer.bias = bias
    return layer


def _fp8_linear(module, weight, bias):
    layer = copy.copy(module)   # ComfyUI's own Linear class: its forward casts the fp8 weight to the input's dtype
    layer._parameters = {"weight": torch.nn.Parameter(weight.to(torch.float8_e4m3fn), requires_grad=False),
                         "bias": bias}
    layer._buffers, layer._modules = {}, {}
    _fresh_comfy_state(layer)
    layer.comfy_cast_weights = True
    return layer


def _dense_linear(module, weight, bias, dtype):
    """A Linear kept in the compute dtype (with the MODEL's patches applied, like the converted ones)."""
    layer = _fp8_linear(module, weight, bias)
    layer._parameters["weight"] = torch.nn.Parameter(weight.to(dtype), requires_grad=False)
    return layer


# Linears of the copy kept in the compute dtype: Chroma's approximator, which makes every block's modulation (0.28 B
# parameters, ~0.5 GiB in bf16). Quantizing it moved the tiny test Chroma's loss 5x more than quantizing the blocks.
DENSE_PREFIXES = ("diffusion_model.distilled_guidance_layer.",)


def kept_dense(key: str) -> bool:
    return key.startswith(DENSE_PREFIXES)


def _fresh_comfy_state(module):
    """Per-module state ComfyUI keeps while loading (lowvram weight functions, patched flags) starts empty in a copy."""
    for attr in ("weight_function", "bias_function"):
        if hasattr(module, attr):
            setattr(module, attr, [])
    for attr in ("prev_comfy_cast_weights", "comfy_patched_weights"):
        module.__dict__.pop(attr, None)


def _copy_tree(module, prefix, convert, device):
    new = copy.copy(module)
    new._parameters = {n: None if p is None else torch.nn.Parameter(p.detach().to(device, copy=True), requires_grad=False)
                       for n, p in module._parameters.items()}
    new._buffers = {n: None if b is None else b.detach().to(device, copy=True) for n, b in module._buffers.items()}
    new._modules = {}
    _fresh_comfy_state(new)
    for name, child in module._modules.items():
        key = f"{prefix}{name}"
        if child is None:
            new._modules[name] = None
        elif isinstance(child, torch.nn.Linear) and key.startswith("diffusion_model."):
            new._modules[name] = convert(child, key)
        else:
            new._modules[name] = _copy_tree(child, key + ".", convert, device)
    return new


def training_copy(model, fmt: str, in_ram: bool = False, fp8_matmul: bool = False, room_bytes: int = 0):
    """A ModelPatcher holding a training copy of ``model`` (a ComfyUI MODEL with FLUX.1) with its Linear weights in
    ``fmt`` ('fp8' or 'nf4'), built on ``model.load_device`` (``in_ram``: on its offload device, for an fp8 copy that
    ComfyUI will load partially). ``fp8_matmul``: the fp8 layers multiply in fp8 (:mod:`.fp8_matmul`). ``room_bytes``:
    what the copy's weights take (the memory plan's ``weight_bytes``), freed on the GPU first. Call inside
    ``torch.inference_mode(False)``."""
    if fmt not in COPY_FORMATS:
        raise ValueError(f"Unknown base weight format '{fmt}'.")
    if fp8_matmul and fmt != "fp8":
        raise ValueError(f"fp8 matmuls need fp8 base weights, not {fmt}.")
    if in_ram and fmt == "nf4":
        raise ValueError("NF4 weights are built on the GPU and cannot be streamed from RAM.")
    device = model.offload_device if in_ram else model.load_device
    base = model.model
    compute_dtype = base.manual_cast_dtype or base.get_dtype()
    if compute_dtype not in (torch.bfloat16, torch.float16, torch.float32):
        compute_dtype = torch.bfloat16
    if torch.device(device).type != "cpu" and room_bytes > 0:
        mm.free_memory(room_bytes * 1.1, device)   # ComfyUI moves other models (the MODEL too) out first
    patches = dict(model.patches)

    def convert(linear, key):
        weight = dense_weight(linear, f"{key}.weight", patches, device)
        bias = _dense_bias(linear, f"{key}.bias", patches, device, compute_dtype)
        if kept_dense(key):
            layer = _dense_linear(linear, weight, bias, compute_dtype)
        elif fmt == "nf4":
            layer = _nf4_linear(linear, weight, bias, compute_dtype, device)
        else:
            layer = _fp8_linear(linear, weight, bias)
            if fp8_matmul:
                layer.forward = fast_forward(layer)
        del weight
        return layer

    with torch.no_grad():
        new_base = _copy_tree(base, "", convert, device)
    for attr in ("device", "model_loaded_weight_memory", "lowvram_patch_counter", "model_lowvram",
                 "current_weight_patches_uuid", "model_offload_buffer_memory"):
        new_base.__dict__.pop(attr, None)   # the MODEL's loading state: the new ModelPatcher starts its own
    patcher = comfy.model_patcher.ModelPatcher(new_base, load_device=model.load_device,
                                               offload_device=model.offload_device)
    patcher.object_patches = model.object_patches.copy()   # e.g. a ModelSamplingFlux node's model_sampling
    patcher.model_options = copy.deepcopy(model.model_options)
    return patcher
