"""Gradient-correct, checkpointable forward of ComfyUI's Flux blocks (FLUX.1, FLUX.2, Chroma), for training only.

ComfyUI's ``DoubleStreamBlock``/``SingleStreamBlock`` update the residual stream in place
(``img +=``, ``txt +=``, ``x +=``) after a LayerNorm has saved that same tensor for backward. Without
checkpointing autograd then refuses to run backward; with per-block ``checkpoint`` the saved input
is silently the *updated* tensor and LoRA gradients come out wrong (cloning the block inputs does
not cure it: the clone is still updated in place after ``norm1`` saved it).

The functions below are the same computation written out of place, built from the block's own
sub-modules (so peft's LoRA layers, ComfyUI's weight casting and lowvram patches all apply) and
from ComfyUI's own ``apply_mod`` and attention. They are installed only on the *training* patcher,
through ComfyUI's ``patches_replace["dit"]`` mechanism, so every other node keeps ComfyUI's
forward. The first call of each block type is compared with ComfyUI's own block forward, so a
ComfyUI update that changes the block math is caught instead of training a different model.

Each block forward runs in ComfyUI's training mode, also when gradient checkpointing recomputes it during backward
(outside any ``with`` of the caller): the recompute then takes the same differentiable code paths as the forward.
"""
import functools
from contextlib import contextmanager

import torch
from torch.utils.checkpoint import checkpoint

import comfy.ldm.flux.layers as flux_layers
import comfy.ldm.flux.math as flux_math

from .comfy_features import block_default_attention, comfy_training_mode, foreign_attention_patches
from .rope import apply_rope

# ComfyUI's modulation helper; if a ComfyUI release drops it, the pack still loads and training explains why it stops
apply_mod = getattr(flux_layers, "apply_mod", None)


class BlockMismatch(RuntimeError):
    pass


def _attention(q, k, v, pe, mask, transformer_options):
    """RoPE, then ComfyUI's attention, never a block's ``preferred_attention`` (ComfyUI after v0.33: e.g.
    comfy-kitchen's int8 attention, which has no backward): the LoRA trains against exact attention."""
    if pe is not None:
        q, k = apply_rope(q, k, pe)
    return flux_math.optimized_attention(q, k, v, q.shape[1], skip_reshape=True, mask=mask,
                                         transformer_options=transformer_options)


def _split_heads(attn_module, x, num_heads):
    qkv = attn_module.qkv(x)
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn_module.norm(q, k, v)
    return q, k, v


def double_block_forward(block, img, txt, vec, pe, attn_mask=None, transformer_options=None):
    """Out-of-place ``comfy.ldm.flux.layers.DoubleStreamBlock.forward``. ``vec`` is the conditioning vector (FLUX.1:
    the block modulates it itself) or, for blocks built with ``modulation=False`` (FLUX.2, Chroma), the block's
    ((img_mod1, img_mod2), (txt_mod1, txt_mod2)) computed outside it."""
    transformer_options = transformer_options or {}
    if block.modulation:
        img_mod1, img_mod2 = block.img_mod(vec)
        txt_mod1, txt_mod2 = block.txt_mod(vec)
    else:
        (img_mod1, img_mod2), (txt_mod1, txt_mod2) = vec
    img_q, img_k, img_v = _split_heads(block.img_attn, apply_mod(block.img_norm1(img), 1 + img_mod1.scale, img_mod1.shift), block.num_heads)
    txt_q, txt_k, txt_v = _split_heads(block.txt_attn, apply_mod(block.txt_norm1(txt), 1 + txt_mod1.scale, txt_mod1.shift), block.num_heads)
    attn = _attention(torch.cat((txt_q, img_q), dim=2), torch.cat((txt_k, img_k), dim=2),
                      torch.cat((txt_v, img_v), dim=2), pe, attn_mask, transformer_options)
    txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]

    img = img + apply_mod(block.img_attn.proj(img_attn), img_mod1.gate)
    img = img + apply_mod(block.img_mlp(apply_mod(block.img_norm2(img), 1 + img_mod2.scale, img_mod2.shift)), img_mod2.gate)
    txt = txt + apply_mod(block.txt_attn.proj(txt_attn), txt_mod1.gate)
    txt = txt + apply_mod(block.txt_mlp(apply_mod(block.txt_norm2(txt), 1 + txt_mod2.scale, txt_mod2.shift)), txt_mod2.gate)
    if txt.dtype == torch.float16:
        txt = torch.nan_to_num(txt, nan=0.0, posinf=65504, neginf=-65504)
    return img, txt


def single_block_forward(block, x, vec, pe, attn_mask=None, transformer_options=None):
    """Out-of-place ``comfy.ldm.flux.layers.SingleStreamBlock.forward``; ``vec`` as for the double block (a single
    modulation for ``modulation=False`` blocks). The MLP half goes through the block's own activation (GELU, or
    FLUX.2's SwiGLU)."""
    transformer_options = transformer_options or {}
    mod = block.modulation(vec)[0] if block.modulation is not None else vec
    qkv, mlp = torch.split(block.linear1(apply_mod(block.pre_norm(x), 1 + mod.scale, mod.shift)),
                           [3 * block.hidden_size, block.mlp_hidden_dim_first], dim=-1)
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = block.norm(q, k, v)
    attn = _attention(q, k, v, pe, attn_mask, transformer_options)
    x = x + apply_mod(block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2)), mod.gate)
    if x.dtype == torch.float16:
        x = torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


def _verify(name, ours, reference):
    for a, b in zip(ours, reference):
        if a.shape != b.shape or not torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-3 * float(b.abs().max()) + 1e-6):
            raise BlockMismatch(
                f"The training forward of {name} no longer matches ComfyUI's own Flux block "
                "(ComfyUI's Flux code changed). Training would optimise a different model; please "
                "update ComfyUI-FluxLoRA or report this with your ComfyUI version.")


_COMPILED = {}


def compiled(forward):
    """``forward`` (one of the block forwards above) through ``torch.compile``, once per process: the block is an
    argument, so all 19 double (38 single) blocks share one compiled graph, which is traced at the first call of its
    block type (compile time is paid once per run and image size) and reused for every block and step after."""
    if forward not in _COMPILED:
        _COMPILED[forward] = torch.compile(forward)
    return _COMPILED[forward]


def compile_problem(device) -> str:
    """Why ``torch.compile`` cannot compile for ``device`` ('' when it can): inductor needs Triton for NVIDIA GPUs."""
    if torch.device(device).type == "cuda":
        from torch.utils._triton import has_triton
        if not has_triton():
            return ("compile_blocks needs Triton to compile for NVIDIA GPUs (pip install triton; on Windows "
                    "triton-windows): install it, or turn compile_blocks off.")
    return ""


class _BlockPatch:
    """A ``patches_replace['dit']`` entry running one block out of place, optionally checkpointed and compiled."""

    def __init__(self, block, kind, checkpointing, verify: dict, compile_forward=False):
        self.block = block
        self.kind = kind
        self.checkpointing = checkpointing
        self.verify = verify  # shared {"double": bool, "single": bool}: block types still to check
        self.compile_forward = compile_forward

    def _run(self, fn, *tensors):
        fn = functools.partial(_in_training_mode, fn)   # also the recompute in backward, which runs outside any with
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *tensors, use_reentrant=False)
        return fn(*tensors)

    def __call__(self, args, extra):
        options = dict(args.get("transformer_options") or {})
        names = ("img", "txt") if self.kind == "double" else ("img",)
        forward = double_block_forward if self.kind == "double" else single_block_forward
        fn = functools.partial(forward, self.block, attn_mask=args.get("attn_mask"), transformer_options=options)
        inputs = [args[n] for n in names] + [args["vec"], args["pe"]]
        if self.verify.pop(self.kind, False):
            self._check(fn, args, extra, names, inputs)   # eager: the check is of the math, not of the compiler
        if self.compile_forward:
            fn = functools.partial(compiled(forward), self.block, attn_mask=args.get("attn_mask"),
                                   transformer_options=options)
        out = self._run(fn, *inputs)
        return dict(zip(names, out if isinstance(out, tuple) else (out,)))

    def _check(self, fn, args, extra, names, inputs):
        """Our forward against ComfyUI's own block on the same inputs: no gradients, LoRA dropout off and the random
        streams untouched, so the check never changes what is trained. Both run in ComfyUI's training mode and with
        ComfyUI's normal attention (not the block's int8 one, where newer ComfyUI has one): like with like."""
        device = inputs[0].device
        with torch.no_grad(), comfy_training_mode(), _dropout_off(self.block), block_default_attention(self.block), \
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            copies = [t.detach().clone() if i < len(names) else t for i, t in enumerate(inputs)]
            ours = fn(*copies)
            ref = extra["original_block"]({**args, **{n: t.detach().clone() for n, t in zip(names, inputs)}})
        _verify(f"a {self.kind} block", ours if isinstance(ours, tuple) else (ours,), tuple(ref[n] for n in names))


def _in_training_mode(fn, *tensors):
    """``fn(*tensors)`` in ComfyUI's training mode: checkpoint calls it again for the recompute in backward."""
    with comfy_training_mode():
        return fn(*tensors)


@contextmanager
def _dropout_off(module):
    """Dropout layers (peft's LoRA dropout) in eval mode for the duration; nothing else changes mode (ComfyUI's fp8 ops
    take another path when not training)."""
    active = [m for m in module.modules() if isinstance(m, torch.nn.Dropout) and m.training]
    for m in active:
        m.eval()
    try:
        yield
    finally:
        for m in active:
            m.train()


def check_trainable_blocks(patcher):
    """Refuses a MODEL whose blocks the training forward cannot stand in for (ComfyUI's Flux code changed, another
    node's block or attention patches, an unknown block layout). It depends on the MODEL alone, so train_run checks
    before any encoding; :func:`install_training_blocks` checks again for callers that come straight to it."""
    dm = patcher.model.diffusion_model
    if apply_mod is None:
        raise BlockMismatch("This ComfyUI no longer has comfy.ldm.flux.layers.apply_mod, which the training forward of "
                            "the Flux blocks uses (ComfyUI's Flux code changed). Please update ComfyUI-FluxLoRA.")
    existing = patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    if existing:
        raise ValueError(
            "The MODEL carries Flux block replacement patches from another node "
            f"({len(existing)} blocks patched). Connect the plain Flux MODEL to FluxLoRATrain.")
    attention = foreign_attention_patches(patcher.model_options)
    if attention:
        raise ValueError(
            f"The MODEL carries attention patches from another node ({'; '.join(attention)}). Flux LoRA Train would "
            "train without them and the LoRA would not match that node's model: connect the plain Flux MODEL (remove the "
            "node that adds them between the model loader and Flux LoRA Train).")
    for block in list(dm.double_blocks) + list(dm.single_blocks):
        if getattr(block, "flipped_img_txt", False) or getattr(block, "yak_mlp", False):
            raise ValueError("Unsupported Flux block layout (flipped img/txt streams or Ovis-style MLPs).")


def install_training_blocks(patcher, checkpointing: bool, compile_forward: bool = False):
    """Routes every double/single block of ``patcher`` (a training clone) through the forwards above (``compile_forward``:
    through their ``torch.compile``d versions)."""
    check_trainable_blocks(patcher)
    dm = patcher.model.diffusion_model
    pending = {"double": True, "single": True}  # the first call of each block type is checked against ComfyUI's
    for i, block in enumerate(dm.double_blocks):
        patcher.set_model_patch_replace(_BlockPatch(block, "double", checkpointing, pending, compile_forward), "dit", "double_block", i)
    for i, block in enumerate(dm.single_blocks):
        patcher.set_model_patch_replace(_BlockPatch(block, "single", checkpointing, pending, compile_forward), "dit", "single_block", i)
