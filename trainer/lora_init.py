"""LoRA initialisations that start from the base weights (PiSSA, OLoRA) or from their gradient (LoRA-GA), computed
by peft's own ``pissa_init`` / ``olora_init`` / ``lora_ga_init`` on a float32 copy of each base weight. peft would
subtract the initial adapter from the base weight; here the shared weights stay untouched and the subtraction lives in
the adapter's frozen 'init' part (see lora.py), so training starts from the unchanged model either way."""
import time

import torch
from peft import LoraGAConfig

from .lora import ADAPTER
from .targets import model_target_names

LORA_GA_BATCHES = 8                      # batches whose gradients LoRA-GA's initialisation is aligned with
LORA_GA_GROUP_BYTES = 2 * 1024 ** 3      # float32 weight gradients held at once; more layers -> more passes


def _layer_groups(layers: dict, budget: int):
    groups, current, size = [], [], 0
    for name, layer in layers.items():
        w = layer.base_layer.weight
        need = w.shape[0] * w.shape[1] * 4
        if current and size + need > budget:
            groups.append(current)
            current, size = [], 0
        current.append(name)
        size += need
    return groups + ([current] if current else [])


def estimate_weight_gradients(layers: dict, run_batches, budget: int = LORA_GA_GROUP_BYTES) -> dict:
    """``{layer: mean dL/dW}`` over the batches ``run_batches()`` runs (forward + backward with the adapters at zero,
    i.e. the base model's gradient). dL/dW = sum over tokens of grad_out^T x, taken from hooks on each adapter layer's
    output (works for fp8 bases, whose weights cannot hold gradients), for as many layers at once as fit ``budget``;
    each further group repeats the batches."""
    grads = {}
    for group in _layer_groups(layers, budget):
        acc = {n: None for n in group}
        counts = {n: 0 for n in group}
        handles = []

        def hook_for(name):
            def forward_hook(module, args, output):
                x = args[0].detach()
                if not output.requires_grad:
                    return

                def grad_hook(g):
                    g2 = g.reshape(-1, g.shape[-1]).float()
                    term = g2.t() @ x.reshape(-1, x.shape[-1]).float()
                    acc[name] = term if acc[name] is None else acc[name] + term
                    counts[name] += 1
                output.register_hook(grad_hook)
            return forward_hook
        for name in group:
            handles.append(layers[name].register_forward_hook(hook_for(name)))
        try:
            run_batches()
        finally:
            for h in handles:
                h.remove()
        for name in group:
            if acc[name] is None:
                raise RuntimeError(f"LoRA-GA: no gradient reached {name}")
            grads[name] = acc[name] / counts[name]
    return grads


def lora_ga_rank_problem(widths: dict, rank: int) -> str:
    """Why LoRA-GA cannot start at ``rank`` on layers of these ``{name: (in_features, out_features)}`` ('' if it can).
    LoRA-GA splits 2 x rank singular directions of each layer's gradient between A and B, and a layer's gradient has no
    more directions than its narrower side; PiSSA and OLoRA need only rank of them and peft caps those per layer."""
    name = min(widths, key=lambda n: min(widths[n]))
    width = min(widths[name])
    if 2 * rank <= width:
        return ""
    return (f"init 'lora_ga' takes 2 x rank = {2 * rank} directions from each targeted layer's gradient, but {name} is "
            f"only {width} wide ({widths[name][0]} in, {widths[name][1]} out). Set rank to {width // 2} or less, or use "
            "init 'pissa' or 'olora' (they cap the rank per layer).")


def rank_problem(diffusion_model, settings) -> str:
    """:func:`lora_ga_rank_problem` for the layers ``settings`` (LoraSettings) target in a ComfyUI diffusion model;
    '' for the other inits. Depends on the MODEL and the settings alone: train_run asks before any encoding."""
    if settings.init != "lora_ga":
        return ""
    layers = {n: diffusion_model.get_submodule(n) for n in model_target_names(settings.targets, settings.blocks,
                                                                                diffusion_model)}
    return lora_ga_rank_problem({n: (l.in_features, l.out_features) for n, l in layers.items()}, settings.rank)


def initialize(lora, method: str, run_batches=None) -> float:
    """Initialises every adapter layer with ``method`` ('pissa', 'olora' or 'lora_ga'; the latter runs
    ``run_batches`` to estimate gradients) and adds the frozen offset. Returns the seconds it took."""
    start = time.perf_counter()
    problem = (lora_ga_rank_problem({n: (l.in_features, l.out_features) for n, l in lora.layers.items()},
                                    lora.settings.rank) if method == "lora_ga" else "")
    if problem:   # before the gradient passes: peft's init would fail on the narrow layer after them
        raise ValueError(problem)
    grads = estimate_weight_gradients(lora.layers, run_batches) if method == "lora_ga" else {}
    initial = {}
    for name, layer in lora.layers.items():
        base = layer.base_layer
        shared = base.weight
        base.weight = torch.nn.Parameter(shared.detach().to(device=lora.device, dtype=torch.float32).clone(),
                                         requires_grad=False)
        try:
            with torch.no_grad():
                if method == "pissa":
                    layer.pissa_init(ADAPTER, "pissa")
                elif method == "olora":
                    layer.olora_init(ADAPTER)
                elif method == "lora_ga":
                    base._peft_loraga_grad = grads.pop(name)
                    layer.lora_ga_init(ADAPTER, LoraGAConfig())
                else:
                    raise ValueError(f"Unknown init '{method}'.")
        finally:
            base.weight = shared  # the shared weight object, untouched; peft changed only the copy
            if hasattr(base, "_peft_loraga_grad"):
                del base._peft_loraga_grad
        for p in (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight):
            p.data = p.data.to(device=lora.device, dtype=torch.float32).contiguous()
        initial[name] = (layer.lora_A[ADAPTER].weight.detach().clone(), layer.lora_B[ADAPTER].weight.detach().clone())
    lora.add_init_offset(initial)
    return time.perf_counter() - start
