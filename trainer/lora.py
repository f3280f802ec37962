"""peft LoRA adapters on ComfyUI's FLUX.1 diffusion model.

peft replaces the targeted ``Linear`` modules with LoRA wrappers in place. ComfyUI shares one
``nn.Module`` between all clones of a MODEL and re-patches weights by module name whenever a
patcher loads, so the wrappers must only be present while the *training* patcher is loaded. That is
exactly ComfyUI's ``PatcherInjection`` contract: ``ModelPatcher.load()`` ejects before loading and
injects after, and ``detach()``/unloading (for example when another node samples with a different
clone) ejects. The adapter parameters live in this object across inject/eject cycles.
"""
import re
from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

import comfy.patcher_extension

ADAPTER = "default"
INJECTION_KEY = "fluxlora_train"

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


def target_module_names(preset: str, blocks: str, depth: int, depth_single: int):
    if preset not in TARGET_PRESETS:
        raise ValueError(f"Unknown LoRA target preset '{preset}'; choose one of {list(TARGET_PRESETS)}.")
    double_layers, single_layers = TARGET_PRESETS[preset]
    doubles, singles = parse_block_selection(blocks, depth, depth_single)
    names = [f"double_blocks.{i}.{n}" for i in doubles for n in double_layers]
    names += [f"single_blocks.{i}.{n}" for i in singles for n in single_layers]
    if not names:
        raise ValueError("The block selection picks no layers to train.")
    return names


def _parent(root, name):
    path, _, child = name.rpartition(".")
    return (root.get_submodule(path) if path else root), child


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    use_dora: bool = False
    targets: str = "all linear"
    blocks: str = "all"


class FluxLoRA:
    """The trainable adapters. ``attach``/``detach`` swap the peft wrappers in and out of the model."""

    def __init__(self, diffusion_model, settings: LoraSettings, device):
        self.model = diffusion_model
        self.settings = settings
        self.names = target_module_names(settings.targets, settings.blocks,
                                         len(diffusion_model.double_blocks), len(diffusion_model.single_blocks))
        if settings.use_dora:
            bad = {str(diffusion_model.get_submodule(n).weight.dtype) for n in self.names
                   if diffusion_model.get_submodule(n).weight.dtype not in (torch.float32, torch.bfloat16, torch.float16)}
            if bad:
                raise ValueError(f"DoRA needs unquantized base weights, but this MODEL stores {', '.join(sorted(bad))}. "
                                 "Load the model with weight_dtype 'default' or turn DoRA off.")
        config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            use_dora=settings.use_dora, target_modules=self.names, bias="none")
        before = set(vars(diffusion_model))
        inject_adapter_in_model(config, diffusion_model, adapter_name=ADAPTER)
        for attr in set(vars(diffusion_model)) - before:  # peft notes its config on the model: not on a shared one
            delattr(diffusion_model, attr)
        self.layers = {n: m for n, m in diffusion_model.named_modules() if isinstance(m, LoraLayer)}
        if sorted(self.layers) != sorted(self.names):
            self._restore_base_layers()
            raise RuntimeError("peft wrapped an unexpected set of layers: "
                               f"{sorted(set(self.layers) ^ set(self.names))[:5]}")
        for layer in self.layers.values():
            # LoRA weights train in float32 on the compute device, whatever the base weight dtype
            # (peft would copy fp8/bf16 base dtypes); re-initialise after the cast so the init is exact.
            for sub in (layer.lora_A, layer.lora_B, layer.lora_dropout):
                sub.to(device=device, dtype=torch.float32)
            layer.reset_lora_parameters(ADAPTER, True)
            if settings.use_dora:
                # B = 0 at init, so DoRA's magnitude starts as the row norms of the base weight
                magnitude = layer.lora_magnitude_vector[ADAPTER]
                magnitude.to(device=device, dtype=torch.float32)
                with torch.no_grad():
                    magnitude.weight.copy_(layer.base_layer.weight.detach().float().norm(dim=1).to(device))
        self.attached = True
        self.detach()

    # -- ComfyUI injection -------------------------------------------------------------------------
    def attach(self):
        for name, layer in self.layers.items():
            parent, child = _parent(self.model, name)
            current = getattr(parent, child)
            if current is not layer:
                layer.base_layer = current
                setattr(parent, child, layer)
        self.attached = True

    def detach(self):
        self._restore_base_layers()
        self.attached = False

    def _restore_base_layers(self):
        for name, layer in self.layers.items():
            parent, child = _parent(self.model, name)
            if getattr(parent, child) is layer:
                setattr(parent, child, layer.base_layer)

    def injection(self):
        return comfy.patcher_extension.PatcherInjection(inject=lambda _mp: self.attach(), eject=lambda _mp: self.detach())

    # -- parameters and export ---------------------------------------------------------------------
    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_parameters(self):
        """(name, parameter) of every trainable tensor, in the order of :meth:`parameters`."""
        out = []
        for name in self.names:
            layer = self.layers[name]
            out += [(f"{name}.lora_A", layer.lora_A[ADAPTER].weight), (f"{name}.lora_B", layer.lora_B[ADAPTER].weight)]
            if self.settings.use_dora:
                out.append((f"{name}.magnitude", layer.lora_magnitude_vector[ADAPTER].weight))
        return out

    def trainable_state(self) -> dict:
        return {name: p.detach().cpu().clone() for name, p in self.named_parameters()}

    def load_trainable_state(self, state: dict):
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(state[name].to(p))

    def requires_grad_(self, flag: bool):
        for p in self.parameters():
            p.requires_grad_(flag)

    def comfy_state_dict(self):
        """Adapters as ComfyUI-native LoRA keys (``diffusion_model.<layer>.lora_up/lora_down/alpha``), float32 on CPU.

        ComfyUI applies ``W + alpha/rank * up @ down``, the same scale peft trains with. A DoRA
        magnitude is converted to ComfyUI's output-axis ``dora_scale`` convention, which normalises by
        the *base* weight's row norm: ``dora_scale = m * ||W|| / ||W + dW||`` reproduces peft exactly.
        """
        out = {}
        scale = self.settings.alpha / self.settings.rank
        for name in self.names:
            layer = self.layers[name]
            down = layer.lora_A[ADAPTER].weight.detach().float()
            up = layer.lora_B[ADAPTER].weight.detach().float()
            key = f"diffusion_model.{name}"
            out[f"{key}.lora_up.weight"] = up.cpu().clone()
            out[f"{key}.lora_down.weight"] = down.cpu().clone()
            out[f"{key}.alpha"] = torch.tensor(float(self.settings.alpha))
            if self.settings.use_dora:
                with torch.no_grad():
                    w = layer.base_layer.weight.detach().float().to(up.device)
                    magnitude = layer.lora_magnitude_vector[ADAPTER].weight.detach().float()
                    ratio = w.norm(dim=1) / (w + scale * (up @ down)).norm(dim=1)
                    out[f"{key}.dora_scale"] = (magnitude * ratio).reshape(-1, 1).cpu().clone()
        return out
