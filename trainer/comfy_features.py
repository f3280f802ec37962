"""What the running ComfyUI offers, found by looking for the feature (never by comparing version strings).

Tested against ComfyUI v0.8.0 and v0.33.0. Each helper says which ComfyUI change it absorbs.
"""
from contextlib import contextmanager

import comfy.model_management as mm

# Per-block attention hooks (ComfyUI >= 0.17 calls them inside both Flux block types). The training forward does not
# run them, so a MODEL carrying them is refused rather than trained as a different model.
BLOCK_ATTENTION_PATCHES = ("attn1_patch", "attn1_output_patch")


@contextmanager
def comfy_training_mode():
    """Sets ``comfy.model_management.in_training`` (ComfyUI >= 0.14) while the training forward and backward run, as
    ComfyUI's own trainer does: ComfyUI then takes its differentiable code paths (e.g. Flux RoPE in pure torch instead
    of comfy-kitchen's kernel; after v0.33 also the modulation norms instead of the fused ``adaln`` kernel, which has
    no backward). The trainer's differentiated forwards enter it themselves (predict.py, blocks.py, rope.py), so no
    caller has to. Restored on exit to what it was (nested uses are safe), so sampling (checkpoint previews, other
    nodes) uses the fast paths. Older ComfyUI has no such flag; nothing is set there."""
    if not hasattr(mm, "in_training"):
        yield
        return
    previous = mm.in_training
    mm.in_training = True
    try:
        yield
    finally:
        mm.in_training = previous


@contextmanager
def block_default_attention(block):
    """ComfyUI after v0.33 gives each Flux block a ``ComfyAttention`` (``block.comfy_attention``) that its forward hands
    to attention as ``preferred_attention``: where a model file selects one (comfy-kitchen's int8 attention, which
    approximates attention and has no backward), its ``function`` replaces ComfyUI's attention in that block. For the
    duration the block's own forward uses ComfyUI's normal attention, the one the training forward uses, so the
    two can be compared exactly; restored on exit, so sampling keeps the model's choice. Blocks without one (ComfyUI
    up to v0.33) are left alone."""
    preferred = getattr(block, "comfy_attention", None)
    function = getattr(preferred, "function", None)
    if function is None:
        yield
        return
    preferred.function = None
    try:
        yield
    finally:
        preferred.function = function


def foreign_attention_patches(model_options: dict) -> list:
    """Descriptions of the per-block attention patches in a MODEL's options, e.g. ['attn1_patch from pack.module.Fn']."""
    patches = (model_options.get("transformer_options") or {}).get("patches") or {}
    found = []
    for kind in BLOCK_ATTENTION_PATCHES:
        for patch in patches.get(kind) or ():
            owner = patch if isinstance(patch, type) else type(patch)
            name = getattr(patch, "__qualname__", None) or owner.__qualname__
            found.append(f"{kind} from {getattr(patch, '__module__', None) or owner.__module__}.{name}")
    return found


def dataset_roots() -> list:
    """Folders training data may come from besides ComfyUI's input folder: ``datasets`` (ComfyUI >= 0.30 registers
    ``<ComfyUI>/datasets``; extra_model_paths.yaml can add more) and ``fluxlora_datasets`` (extra_model_paths.yaml,
    for any ComfyUI)."""
    import folder_paths
    roots = []
    for kind in ("datasets", "fluxlora_datasets"):
        if kind in folder_paths.folder_names_and_paths:
            roots += [r for r in folder_paths.get_folder_paths(kind) if r not in roots]
    return roots


def server_is_local() -> bool:
    """Whether ComfyUI listens on loopback addresses only (no --listen to other machines)."""
    from comfy.cli_args import args
    hosts = [h.strip().strip("[]") for h in str(getattr(args, "listen", "127.0.0.1") or "127.0.0.1").split(",")]
    return all(h in ("127.0.0.1", "localhost", "::1") or h.startswith("127.") for h in hosts if h)
