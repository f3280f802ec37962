"""How a run uses VRAM: the base weight format, how much of the base weights stays in VRAM (the rest streams from system
RAM through ComfyUI's partial loading), and a check that the run fits, made before any image is encoded.

The peak is modelled as weights in VRAM + LoRA state + activations per token (+ cast buffers for fp8 / NF4 weights).
The terms were fitted to bench/estimate.py's traces of the real training loop at full FLUX.1-dev size (rank 16 = 76.6 M
LoRA parameters, bs 1, gradient checkpointing; bf16 23.9 / 24.6 / 25.6 GiB and fp8 13.0 / 13.7 / 14.7 GiB at
512 / 768 / 1024 px), which the model reproduces within 0.1 GiB: with checkpointing each block keeps its input
(tokens x hidden) and the block being recomputed holds about 40 more of them; without, every block holds its ~40; the
LoRA holds its float32 weights and AdamW state and part of its gradients (12 bytes per parameter) at the peak. Numbers
from it are estimates until bench/fullsize.py measures them on a GPU.
"""
from dataclasses import dataclass, replace

import torch
from .base_weights import kept_dense

GIB = 1024 ** 3
VRAM_TIERS = ("auto", "24 GB", "16 GB", "12 GB", "8 GB")
TEXT_TOKENS = 512           # FLUX.1's T5 length: the plan assumes the longest caption
WORKING_SET = 40                        # fitted: activations of the block being recomputed, in units of tokens x hidden
LORA_BYTES = 12                         # fitted: bytes per LoRA parameter at the peak (weights, AdamW state, gradients)
EMA_BYTES = 8                           # ema: the float32 average, and the trained weights' copy while it is applied
CAST_BUFFERS = 2                        # fp8 / NF4 layers: weights cast to the compute dtype, a few at a time
RESERVED_BYTES = int(1.0 * GIB)         # CUDA context, allocator slack, ComfyUI's reserve (an allowance, not fitted)
BYTES = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "fp8": 1.0, "nf4": 0.5 + 1 / 64 + 4 / (64 * 256)}  # NF4: 4-bit codes + double-quantised absmax


class NotEnoughMemory(ValueError):
    pass


@dataclass(frozen=True)
class ModelFacts:
    """What the plan needs to know about the FLUX model."""
    linear_params: int      # parameters of the diffusion model's Linear layers (what fp8 / NF4 shrink)
    other_bytes: int        # everything else (norms, embedder scales), as stored
    loaded_format: str      # 'bf16', 'fp16', 'fp32' or 'fp8' (how ComfyUI loaded the weights)
    hidden: int
    blocks: int
    largest_linear: int     # parameters of the largest Linear (cast buffers)


@dataclass(frozen=True)
class Plan:
    tier: str               # the VRAM tier asked for ('auto' or e.g. '12 GB')
    budget: int             # bytes of VRAM the run may use
    base_weights: str       # 'as loaded', 'fp8' or 'nf4'
    weight_bytes: int       # base weights in that format
    gpu_weight_bytes: int   # of those, kept in VRAM (the rest streams from RAM every step)
    other_bytes: int        # activations, LoRA state, buffers
    reason: str

    @property
    def offloaded(self) -> bool:
        return self.gpu_weight_bytes < self.weight_bytes

    @property
    def peak(self) -> int:
        return self.gpu_weight_bytes + self.other_bytes

    def describe(self) -> str:
        weights = (f"{self.weight_bytes / GIB:.1f} GiB base weights ({self.base_weights})"
                   + (f", {self.gpu_weight_bytes / GIB:.1f} GiB of them in VRAM, the rest streamed from RAM each step"
                      if self.offloaded else ""))
        return (f"VRAM plan ({self.tier}): {weights}; estimated peak {self.peak / GIB:.1f} of {self.budget / GIB:.1f} "
                f"GiB. {self.reason}")


def model_facts(model) -> ModelFacts:
    """Facts of a ComfyUI MODEL holding FLUX.1 (read from its modules; nothing is moved)."""
    return diffusion_model_facts(model.model.diffusion_model)


def diffusion_model_facts(dm) -> ModelFacts:
    """Facts of ComfyUI's FLUX.1 diffusion model (also one built on the meta device, for planning full size)."""
    linear, other, largest = 0, 0, 0
    for name, module in dm.named_modules():
        own = list(module.parameters(recurse=False))
        if isinstance(module, torch.nn.Linear) and kept_dense(f"diffusion_model.{name}"):
            other += module.weight.numel() * 2 + sum(p.numel() * p.element_size() for p in own if p is not module.weight)
        elif isinstance(module, torch.nn.Linear):
            linear += module.weight.numel()
            largest = max(largest, module.weight.numel())
            other += sum(p.numel() * p.element_size() for p in own if p is not module.weight)
        else:
            other += sum(p.numel() * p.element_size() for p in own)
    stored = next(p for n, p in dm.named_parameters() if n.endswith("qkv.weight")).dtype
    loaded = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(stored, "fp8")
    return ModelFacts(linear_params=linear, other_bytes=other, loaded_format=loaded, hidden=dm.params.hidden_size,
                      blocks=len(dm.double_blocks) + len(dm.single_blocks), largest_linear=largest)


def weight_bytes(facts: ModelFacts, base_weights: str) -> int:
    fmt = facts.loaded_format if base_weights == "as loaded" else base_weights
    return int(facts.linear_params * BYTES[fmt] + facts.other_bytes)


def other_bytes(facts: ModelFacts, base_weights: str, image_tokens: int, batch: int, checkpointing: bool,
                trainable_params: int, compute_bytes: int = 2, ema: bool = False) -> int:
    """Everything but the base weights: activations, LoRA weights + AdamW state + gradients (float32), cast buffers,
    the EMA of the LoRA weights (``ema``)."""
    unit = (image_tokens + TEXT_TOKENS) * facts.hidden * compute_bytes * batch
    activations = unit * (facts.blocks + WORKING_SET) if checkpointing else unit * WORKING_SET * facts.blocks
    fmt = facts.loaded_format if base_weights == "as loaded" else base_weights
    casts = facts.largest_linear * compute_bytes * CAST_BUFFERS if fmt in ("fp8", "nf4") else 0
    return int(activations + trainable_params * (LORA_BYTES + (EMA_BYTES if ema else 0)) + casts)


def tier_bytes(tier: str) -> int:
    return int(float(tier.split()[0]) * GIB)


def make_plan(facts: ModelFacts, *, tier: str, base_weights: str, gpu_weights_gb: float, image_tokens: int, batch: int,
              checkpointing: bool, trainable_params: int, available: int, free_ram: int, on_gpu: bool,
              dense_only: bool = False, nf4_available: bool = True, ema: bool = False) -> Plan:
    """Chooses the base weight format (when 'auto') and how much of it stays in VRAM, and checks that the run fits.

    ``available``: VRAM bytes the run can have (free + what ComfyUI can unload); ``free_ram``: system RAM bytes free.
    ``dense_only``: the adapter needs the unquantized weights (DoRA, PiSSA-style inits): 'auto' keeps them as loaded.
    ``nf4_available``: bitsandbytes imports here; without it 'auto' never picks NF4. ``ema``: the run keeps an EMA of
    the LoRA weights.
    Raises :class:`NotEnoughMemory` with what to change when it cannot fit."""
    budget = available if tier == "auto" else min(available, tier_bytes(tier)) if on_gpu else tier_bytes(tier)
    usable = budget - RESERVED_BYTES if on_gpu or tier != "auto" else None

    def cost(fmt):
        return weight_bytes(facts, fmt), other_bytes(facts, fmt, image_tokens, batch, checkpointing, trainable_params,
                                                     ema=ema)

    if usable is None:   # CPU without a tier: nothing to plan for
        fmt = "as loaded" if base_weights == "auto" else base_weights
        w, o = cost(fmt)
        gpu = min(w, int(gpu_weights_gb * GIB)) if gpu_weights_gb > 0 and fmt != "nf4" else w
        return Plan(tier, budget, fmt, w, gpu, o, "Training runs on the CPU: no VRAM limit applies.")
    if base_weights == "auto" and dense_only:
        fmt, reason = "as loaded", "Kept as loaded: DoRA and the PiSSA / OLoRA / LoRA-GA inits need unquantized weights."
    elif base_weights == "auto":
        fmt, reason = _choose_format(facts, cost, usable, nf4_available)
    else:
        fmt, reason = base_weights, f"base_weights '{base_weights}' as set."
    w, o = cost(fmt)
    if base_weights == "auto" and fmt == "fp8" and facts.loaded_format != "fp8" and w + o > usable and w > free_ram:
        fmt, reason = "as loaded", ("Chosen because no format fits whole and an fp8 copy to stream would not fit in "
                                    "free system RAM: the weights as loaded, part of them streamed from RAM each step.")
        w, o = cost(fmt)
    resolution_hint = ("lower the dataset resolution (or batch size)"
                       + ("" if checkpointing else ", or turn gradient_checkpointing on"))
    if o > usable:
        raise NotEnoughMemory(
            f"This run does not fit in {budget / GIB:.1f} GiB of VRAM even with every base weight streamed from RAM: "
            f"activations and LoRA state alone need about {o / GIB:.1f} GiB (estimated) at "
            f"{image_tokens} image tokens x batch {batch}. To fix: {resolution_hint}.")
    room = usable - o
    if gpu_weights_gb > 0:
        wanted = int(gpu_weights_gb * GIB)
        if wanted > room:
            raise NotEnoughMemory(
                f"gpu_weights_gb {gpu_weights_gb:g} leaves too little VRAM: with {o / GIB:.1f} GiB of activations and "
                f"LoRA state (estimated) only {room / GIB:.1f} GiB of base weights fit in {budget / GIB:.1f} GiB. "
                f"Set gpu_weights_gb to {room / GIB:.1f} or less (0: automatic).")
        gpu = min(w, wanted)
    else:
        gpu = min(w, room)
    if gpu < w:
        if fmt == "nf4":
            raise NotEnoughMemory(
                f"NF4 base weights ({w / GIB:.1f} GiB) plus activations ({o / GIB:.1f} GiB, estimated) do not fit in "
                f"{budget / GIB:.1f} GiB, and NF4 weights cannot be streamed from RAM. Use base_weights 'fp8' (streams "
                f"what does not fit) or {resolution_hint}.")
        stream_ram = w - gpu if fmt == "as loaded" else w   # a copy is built in RAM; the MODEL is in RAM already
        if fmt != "as loaded" and stream_ram > free_ram:
            raise NotEnoughMemory(
                f"Streaming {fmt} base weights needs {stream_ram / GIB:.1f} GiB of free system RAM for their copy, but "
                f"only {free_ram / GIB:.1f} GiB is free. Load the model as fp8 in 'Load Diffusion Model' "
                f"(weight_dtype fp8_e4m3fn) and set base_weights 'as loaded', or close other programs.")
    return Plan(tier, budget, fmt, w, gpu, o, reason)


def _choose_format(facts, cost, usable, nf4_available=True):
    loaded = facts.loaded_format
    for fmt, why in (("as loaded", f"the {loaded} weights as loaded fit"),
                     ("fp8", "fp8 base weights fit (bf16 would not)"),
                     ("nf4", "NF4 base weights (QLoRA) fit (fp8 would not)")):
        if (fmt == "fp8" and loaded == "fp8") or (fmt == "nf4" and not nf4_available):
            continue
        w, o = cost(fmt)
        if w + o <= usable:
            return fmt, f"Chosen because {why}."
    fmt = "as loaded" if loaded == "fp8" else "fp8"
    return fmt, ("Chosen because no format fits whole: fp8 weights, part of them streamed from system RAM each step "
                 "(slower, same result).")


def available_memory(device) -> tuple:
    """(VRAM bytes the run can have: free + what ComfyUI's loaded models hold there, free system RAM bytes)."""
    import comfy.model_management as mm
    import psutil
    ram = psutil.virtual_memory().available
    if torch.device(device).type == "cpu":
        return ram, ram
    held = sum(m.model.loaded_size() for m in mm.current_loaded_models if m.device == torch.device(device))
    return mm.get_free_memory(device) + held, ram


def _bitsandbytes_checked(settings, base_weights: str) -> bool:
    """Refuses NF4 / adamw8bit where bitsandbytes does not import; whether 'auto' may pick NF4."""
    from .optional_packages import bitsandbytes_error, bitsandbytes_refusal
    if settings.optimizer != "adamw8bit" and base_weights not in ("nf4", "auto"):
        return True   # nothing here needs it: not even imported
    missing = bool(bitsandbytes_error())
    if missing and settings.optimizer == "adamw8bit":
        raise ValueError(bitsandbytes_refusal("optimizer 'adamw8bit'", "choose optimizer 'adamw' or 'adafactor'"))
    if missing and base_weights == "nf4":
        raise ValueError(bitsandbytes_refusal("base_weights 'nf4'", "choose base_weights 'fp8' or 'auto' (which "
                                              "streams fp8 weights from RAM where NF4 would have been needed)"))
    return not missing


def plan_run(model, settings, image_tokens: int) -> Plan:
    """The plan for training ``model`` (a ComfyUI MODEL) with ``settings`` on images of up to ``image_tokens``."""
    from .lora import trainable_count
    from . import fp8_matmul
    device = model.load_device
    if settings.fp8_matmul and not fp8_matmul.supported(device):
        raise ValueError(f"fp8_matmul needs a GPU with fp8 tensor cores (NVIDIA RTX 40xx / 50xx, H100 or newer); "
                         f"{device} has none: turn fp8_matmul off.")
    available, ram = available_memory(device)
    base_weights = "fp8" if settings.fp8_matmul else settings.base_weights   # auto or fp8 (the settings check)
    on_gpu = torch.device(device).type != "cpu"
    # 'auto' can pick NF4 only where a limit applies (a GPU, or a tier): only then is bitsandbytes imported for it
    nf4_available = _bitsandbytes_checked(settings, base_weights if on_gpu or settings.vram != "auto" or
                                          base_weights != "auto" else "as loaded")
    plan = make_plan(model_facts(model), tier=settings.vram, base_weights=base_weights,
                     gpu_weights_gb=settings.gpu_weights_gb, image_tokens=image_tokens, batch=settings.batch_size,
                     checkpointing=settings.gradient_checkpointing,
                     trainable_params=trainable_count(model.model.diffusion_model, settings.lora),
                     available=available, free_ram=ram, on_gpu=on_gpu,
                     dense_only=settings.use_dora or settings.lora.moves_base_weight, nf4_available=nf4_available,
                     ema=settings.ema)
    if settings.fp8_matmul and settings.base_weights == "auto":
        plan = replace(plan, reason="fp8 base weights: fp8_matmul multiplies by them in fp8.")
    return plan
