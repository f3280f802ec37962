"""peft adapters (LoRA, DoRA, LoKr, LoHa) on ComfyUI's FLUX.1 diffusion model.

peft replaces the targeted ``Linear`` modules with adapter wrappers in place. ComfyUI shares one ``nn.Module``
between all clones of a MODEL and re-patches weights by module name whenever a patcher loads, so the wrappers must only
be present while the *training* patcher is loaded. That is exactly ComfyUI's ``PatcherInjection`` contract:
``ModelPatcher.load()`` ejects before loading and injects after, and ``detach()``/unloading (for example when another
node samples with a different clone) ejects. The adapter parameters live in this object across inject/eject cycles.

Initialisations that move part of the base weight into the adapter (PiSSA, OLoRA, LoRA-GA) are computed by peft on a
copy of each base weight; the shared weights are never changed. The part they would subtract from the base instead
lives in a frozen second adapter ("init") that holds the initial values negated, so the effective weight is
``W + s*(B A - B0 A0)``: what peft trains, and exactly a rank-2r LoRA on the untouched base when saved.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft import LoHaConfig, LoKrConfig, LoraConfig, inject_adapter_in_model
from peft.tuners.loha import LoHaLayer
from peft.tuners.lokr import LoKrLayer
from peft.tuners.lora import LoraLayer

import comfy.patcher_extension

from . import adapter_keys
from .targets import model_target_names

ADAPTER = "default"
INIT_ADAPTER = "init"   # frozen: minus the initial values of PiSSA / OLoRA / LoRA-GA
INJECTION_KEY = "fluxlora_train"
ADAPTER_TYPES = ("lora", "lokr", "loha")
INITS = ("default", "lora_ga", "pissa", "olora")
LOKR_PARAMS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
LOHA_PARAMS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
LYCORIS_LAYERS = (LoKrLayer, LoHaLayer)   # peft layers that train their own factors (no DoRA, no init offset)


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
    adapter: str = "lora"
    init: str = "default"
    lokr_factor: int = -1

    def __post_init__(self):
        if self.adapter not in ADAPTER_TYPES or self.init not in INITS:
            raise ValueError(f"Unknown adapter '{self.adapter}' or init '{self.init}'.")
        if self.adapter != "lora" and (self.use_dora or self.init != "default"):
            name = {"lokr": "LoKr", "loha": "LoHa"}[self.adapter]
            raise ValueError(f"{name} trains with its own initialisation and without DoRA: set use_dora off and init "
                             "'default', or use adapter 'lora'.")
        if self.use_dora and self.init != "default":
            raise ValueError(f"init '{self.init}' cannot be combined with DoRA; set use_dora off or init 'default'.")

    @property
    def moves_base_weight(self) -> bool:
        return self.init in ("lora_ga", "pissa", "olora")


def _peft_config(settings: LoraSettings, names):
    if settings.adapter == "lokr":
        return LoKrConfig(r=settings.rank, alpha=settings.alpha, target_modules=names, rank_dropout=0.0,
                          module_dropout=0.0, decompose_factor=settings.lokr_factor)
    if settings.adapter == "loha":
        return LoHaConfig(r=settings.rank, alpha=settings.alpha, target_modules=names, rank_dropout=0.0,
                          module_dropout=0.0)
    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      use_dora=settings.use_dora, target_modules=names, bias="none")


def _adapter_params(layer, adapter):
    """(suffix, parameter) of one layer's adapter, in a fixed order."""
    if isinstance(layer, LoKrLayer):
        return [(n, getattr(layer, n)[adapter]) for n in LOKR_PARAMS if adapter in getattr(layer, n)]
    if isinstance(layer, LoHaLayer):
        return [(n, getattr(layer, n)[adapter]) for n in LOHA_PARAMS]
    params = [("lora_A", layer.lora_A[adapter].weight), ("lora_B", layer.lora_B[adapter].weight)]
    if adapter in getattr(layer, "lora_magnitude_vector", {}):
        params.append(("magnitude", layer.lora_magnitude_vector[adapter].weight))
    return params


def trainable_count(diffusion_model, settings: LoraSettings) -> int:
    """Trainable parameters the adapters will have (exact for LoRA/DoRA, an upper bound for LoKr), without building
    them: for memory planning before any encoding. LoHa trains two rank-r pairs per layer."""
    pairs = 2 if settings.adapter == "loha" else 1
    total = 0
    for name in model_target_names(settings.targets, settings.blocks, diffusion_model):
        layer = diffusion_model.get_submodule(name)
        total += pairs * settings.rank * (layer.in_features + layer.out_features) + (layer.out_features if settings.use_dora else 0)
    return total


def dense_weights_problem(diffusion_model, settings: LoraSettings) -> str:
    """Why these adapters cannot train on the weights this MODEL stores ('' if they can). DoRA and the PiSSA / OLoRA /
    LoRA-GA inits compute with the base weights themselves, which a quantized MODEL (fp8 weight_dtype, ...) does not
    hold in a float format. It depends on the MODEL and the settings alone, so train_run asks before any encoding."""
    if not (settings.use_dora or settings.moves_base_weight):
        return ""
    what = "DoRA" if settings.use_dora else f"init '{settings.init}'"
    names = model_target_names(settings.targets, settings.blocks, diffusion_model)
    bad = {str(diffusion_model.get_submodule(n).weight.dtype) for n in names
           if diffusion_model.get_submodule(n).weight.dtype not in (torch.float32, torch.bfloat16, torch.float16)}
    if not bad:
        return ""
    return (f"{what} needs unquantized base weights, but this MODEL stores {', '.join(sorted(bad))}. Load the model "
            f"with weight_dtype 'default' or turn {what} off.")


class FluxLoRA:
    """The trainable adapters. ``attach``/``detach`` swap the peft wrappers in and out of the model."""

    def __init__(self, diffusion_model, settings: LoraSettings, device):
        self.model = diffusion_model
        self.settings = settings
        self.device = device
        self.names = model_target_names(settings.targets, settings.blocks, diffusion_model)
        problem = dense_weights_problem(diffusion_model, settings)
        if problem:
            raise ValueError(problem)
        before = set(vars(diffusion_model))
        inject_adapter_in_model(_peft_config(settings, self.names), diffusion_model, adapter_name=ADAPTER)
        for attr in set(vars(diffusion_model)) - before:  # peft notes its config on the model: not on a shared one
            delattr(diffusion_model, attr)
        self.layers = {n: m for n, m in diffusion_model.named_modules() if isinstance(m, (LoraLayer,) + LYCORIS_LAYERS)}
        if sorted(self.layers) != sorted(self.names):
            self._restore_base_layers()
            raise RuntimeError("peft wrapped an unexpected set of layers: "
                               f"{sorted(set(self.layers) ^ set(self.names))[:5]}")
        for layer in self.layers.values():
            # adapters train in float32 on the compute device, whatever the base weight dtype (peft would copy fp8/bf16
            # base dtypes); re-initialise after the cast so the init is exact
            for _, p in _adapter_params(layer, ADAPTER):
                p.data = p.data.to(device=device, dtype=torch.float32)
            for sub in ("lora_dropout",):
                if hasattr(layer, sub):
                    getattr(layer, sub).to(device=device)
            if isinstance(layer, LYCORIS_LAYERS):
                layer.reset_adapter_parameters(ADAPTER)   # LoHa: w2_b = 0, LoKr: w2 = 0 (no change at step 0)
            else:
                layer.reset_lora_parameters(ADAPTER, True)
            if settings.use_dora:
                # B = 0 at init, so DoRA's magnitude starts as the row norms of the base weight
                with torch.no_grad():
                    layer.lora_magnitude_vector[ADAPTER].weight.copy_(
                        layer.base_layer.weight.detach().float().norm(dim=1).to(device))
        self.has_init_offset = False
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

    @contextmanager
    def multiplier(self, value: float):
        """The trained adapter applied at ``value`` x its strength inside the ``with`` block (LoraLoader's
        ``strength_model``: every adapter here is linear in its scale, DoRA excepted, which sliders refuse)."""
        saved = {name: layer.scaling[ADAPTER] for name, layer in self.layers.items()}
        for name, layer in self.layers.items():
            layer.scaling[ADAPTER] = saved[name] * value
        try:
            yield
        finally:
            for name, layer in self.layers.items():
                layer.scaling[ADAPTER] = saved[name]

    def injection(self):
        return comfy.patcher_extension.PatcherInjection(inject=lambda _mp: self.attach(), eject=lambda _mp: self.detach())

    # -- initialisations that move part of the base weight (PiSSA, OLoRA, LoRA-GA) --------------------
    def add_init_offset(self, initial: dict):
        """Adds the frozen 'init' adapter holding minus the initial ``{layer: (A0, B0)}``; afterwards both adapters are
        active in every layer."""
        was_attached = self.attached
        self.attach()
        config = LoraConfig(r=self.settings.rank, lora_alpha=self.settings.alpha, lora_dropout=0.0,
                            target_modules=self.names, bias="none")
        before = set(vars(self.model))
        inject_adapter_in_model(config, self.model, adapter_name=INIT_ADAPTER)
        for attr in set(vars(self.model)) - before:
            delattr(self.model, attr)
        for name, layer in self.layers.items():
            a0, b0 = initial[name]
            with torch.no_grad():
                layer.lora_A[INIT_ADAPTER].weight.data = a0.to(device=self.device, dtype=torch.float32).clone()
                layer.lora_B[INIT_ADAPTER].weight.data = -b0.to(device=self.device, dtype=torch.float32).clone()
            layer.set_adapter([ADAPTER, INIT_ADAPTER])
            for p in (layer.lora_A[INIT_ADAPTER].weight, layer.lora_B[INIT_ADAPTER].weight):
                p.requires_grad_(False)
        self.has_init_offset = True
        if not was_attached:
            self.detach()

    def init_offset(self) -> dict:
        """``{layer: (A0, B0)}`` of the frozen init adapter (empty without one)."""
        if not self.has_init_offset:
            return {}
        return {n: (l.lora_A[INIT_ADAPTER].weight.detach().cpu().clone(), -l.lora_B[INIT_ADAPTER].weight.detach().cpu().clone())
                for n, l in self.layers.items()}

    # -- parameters and export ---------------------------------------------------------------------
    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_parameters(self):
        """(name, parameter) of every trainable tensor, in the order of :meth:`parameters`."""
        return [(f"{name}.{suffix}", p) for name in self.names for suffix, p in _adapter_params(self.layers[name], ADAPTER)]

    def trainable_state(self) -> dict:
        state = {name: p.detach().cpu().clone() for name, p in self.named_parameters()}
        for name, (a0, b0) in self.init_offset().items():
            state[f"{name}.init_A"], state[f"{name}.init_B"] = a0, b0
        return state

    def load_trainable_state(self, state: dict):
        if any(k.endswith(".init_A") for k in state) and not self.has_init_offset:
            self.add_init_offset({n: (state[f"{n}.init_A"], state[f"{n}.init_B"]) for n in self.names})
        with torch.no_grad():
            for name, p in self.named_parameters():
                p.copy_(state[name].to(p))

    def requires_grad_(self, flag: bool):
        for p in self.parameters():
            p.requires_grad_(flag)

    def comfy_state_dict(self):
        """The adapters as ComfyUI-native keys (``diffusion_model.<layer>.*``), float32 on CPU; see adapter_keys."""
        out = {}
        for name in self.names:
            layer = self.layers[name]
            params = {suffix: p.detach().float() for suffix, p in _adapter_params(layer, ADAPTER)}
            key = f"diffusion_model.{name}"
            if isinstance(layer, LoKrLayer):
                out.update(adapter_keys.lokr_keys(key, params, layer.scaling[ADAPTER], self.settings.alpha,
                                                  self.settings.rank))
                continue
            if isinstance(layer, LoHaLayer):
                out.update(adapter_keys.loha_keys(key, params, self.settings.alpha))
                continue
            offset = None
            if self.has_init_offset:
                offset = (layer.lora_A[INIT_ADAPTER].weight.detach().float(), layer.lora_B[INIT_ADAPTER].weight.detach().float())
            base = layer.base_layer.weight.detach() if self.settings.use_dora else None
            out.update(adapter_keys.lora_keys(key, params, self.settings.alpha, self.settings.rank, offset, base))
        return out
