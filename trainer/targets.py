"""Which Linear layers of ComfyUI's Flux blocks get an adapter: target presets and block selections.

FLUX.2 and Chroma blocks have no modulation layers of their own (FLUX.2 shares three modulation layers across all
blocks, Chroma computes every block's modulation in its approximator); those shared layers lie outside any block
selection and are not trained, so 'all linear' there means every Linear inside the blocks."""
import re

DOUBLE_ALL = ("img_mod.lin", "img_attn.qkv", "img_attn.proj", "img_mlp.0", "img_mlp.2",
              "txt_mod.lin", "txt_attn.qkv", "txt_attn.proj", "txt_mlp.0", "txt_mlp.2")
SINGLE_ALL = ("linear1", "linear2", "modulation.lin")
TARGET_PRESETS = {
    # every Linear of the double and single blocks (kohya / ai-toolkit default; 304 layers on FLUX.1-dev)
    "all linear": (DOUBLE_ALL, SINGLE_ALL),
    # attention projections; single blocks fuse attention with the MLP in linear1/linear2
    "attention": (("img_attn.qkv", "img_attn.proj", "txt_attn.qkv", "txt_attn.proj"), ("linear1", "linear2")),
}


def parse_block_selection(spec: str, depth: int, depth_single: int):
    """``"all"`` or e.g. ``"double 0-9, single 20-37"`` -> (double indices, single indices)."""
    spec = (spec or "").strip().lower()
    if spec in ("", "all"):
        return list(range(depth)), list(range(depth_single))
    chosen = {"double": set(), "single": set()}
    limits = {"double": depth, "single": depth_single}
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(double|single)\s*[: ]?\s*(all|\d+)(?:\s*-\s*(\d+))?\s*", part)
        if not m:
            raise ValueError(f"Block selection '{part.strip()}' not understood. Use e.g. 'all', 'double 0-18', "
                             "'single 7', 'double 0-3, single 20-37'.")
        kind, lo, hi = m.group(1), m.group(2), m.group(3)
        lo_i, hi_i = (0, limits[kind] - 1) if lo == "all" else (int(lo), int(hi if hi is not None else lo))
        if lo_i > hi_i or hi_i >= limits[kind]:
            raise ValueError(f"Block selection '{part.strip()}' is outside this model's {limits[kind]} {kind} blocks "
                             f"(valid: 0-{limits[kind] - 1}).")
        chosen[kind].update(range(lo_i, hi_i + 1))
    return sorted(chosen["double"]), sorted(chosen["single"])


MODULATION_LAYERS = ("img_mod.lin", "txt_mod.lin", "modulation.lin")


def target_module_names(preset: str, blocks: str, depth: int, depth_single: int, block_modulation: bool = True):
    """Module names (``double_blocks.3.img_attn.qkv`` ...) of the chosen layers; ``block_modulation`` False for
    blocks without their own modulation layers (FLUX.2, Chroma)."""
    if preset not in TARGET_PRESETS:
        raise ValueError(f"Unknown LoRA target preset '{preset}'; choose one of {list(TARGET_PRESETS)}.")
    double_layers, single_layers = TARGET_PRESETS[preset]
    if not block_modulation:
        double_layers = [n for n in double_layers if n not in MODULATION_LAYERS]
        single_layers = [n for n in single_layers if n not in MODULATION_LAYERS]
    doubles, singles = parse_block_selection(blocks, depth, depth_single)
    names = [f"double_blocks.{i}.{n}" for i in doubles for n in double_layers]
    names += [f"single_blocks.{i}.{n}" for i in singles for n in single_layers]
    if not names:
        raise ValueError("The block selection picks no layers to train.")
    return names


def model_target_names(preset: str, blocks: str, diffusion_model):
    """:func:`target_module_names` for a ComfyUI Flux-family diffusion model."""
    return target_module_names(preset, blocks, len(diffusion_model.double_blocks), len(diffusion_model.single_blocks),
                               block_modulation=bool(diffusion_model.double_blocks[0].modulation))
