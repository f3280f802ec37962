"""Every training setting, declared once: type, default, range or choices, and its help text.

The train node's widgets and tooltips, the advanced-settings node, the presets, the saved file's metadata, the README's
settings table and the tests are all derived from :class:`TrainSettings`. To add a setting, add a field here (and a
probe in tests/core/test_settings_effects.py, which proves that every setting changes the run).
"""
from dataclasses import asdict, dataclass, field, fields, replace

from .base_weights import BASE_WEIGHTS
from .lora import ADAPTER_TYPES, INITS, LoraSettings
from .memory_plan import VRAM_TIERS
from .objective import DEFAULT_SHIFT, LOSS_WEIGHTINGS, SIGMA_SAMPLERS
from .optim import OPTIMIZERS, SCHEDULERS
from .preservation import PRESERVATION_MODES
from .targets import TARGET_PRESETS


def setting(default, help: str, *, min=None, max=None, step=None, choices=None, basic=False, only="",
            resumable=False):
    """A declared setting. ``basic``: shown on the train node itself (the rest sit on the advanced-settings node).
    ``only``: the setting's effect is limited to this, and the effect test checks it there. ``resumable``: may differ
    when a run is resumed (everything else must match the interrupted run)."""
    return field(default=default, metadata={"help": help, "min": min, "max": max, "step": step, "choices": choices,
                                            "basic": basic, "only": only, "resumable": resumable})


@dataclass(frozen=True)
class TrainSettings:
    steps: int = setting(1500, "Optimizer steps. About 100 per training image; 1000-2500 suits 10-30 images. A resumed "
                               "run trains until this step.", min=1, max=100_000, basic=True, resumable=True)
    learning_rate: float = setting(1e-4, "Step size. 1e-4 to 4e-4 is typical for rank 16-32 with AdamW; lower it if "
                                         "samples 'burn' early.", min=1e-7, max=1.0, step=1e-6, basic=True)
    rank: int = setting(16, "LoRA rank: capacity and file size (rank 16 on all linear layers is ~150 MB in bf16). 16 for a subject, 32 for a "
                            "detailed style.", min=1, max=256, basic=True)
    seed: int = setting(0, "Seeds the LoRA init, noise, noise levels, caption dropout and image order: the same seed "
                           "and settings give the same LoRA, byte for byte.", min=0, max=0xFFFFFFFFFFFFFFFF, basic=True)
    alpha: float = setting(0.0, "LoRA alpha; the update is scaled by alpha/rank. 0 means alpha = rank (scale 1), which "
                                "keeps the effective learning rate when you change the rank.", min=0.0, max=1024.0,
                           step=0.5)
    optimizer: str = setting("adamw", "adamw: reliable default. adamw8bit (bitsandbytes): 8-bit optimizer state. "
                                      "adafactor: least optimizer memory. prodigy: finds its own step size; set the "
                                      "learning rate to 1.0 with it.", choices=OPTIMIZERS)
    scheduler: str = setting("constant", "Learning-rate schedule after the warmup (transformers' implementations).",
                             choices=SCHEDULERS)
    warmup_steps: int = setting(0, "Linear learning-rate warmup from 0, in steps (~5% of the steps is common with "
                                   "cosine).", min=0, max=100_000)
    batch_size: int = setting(1, "Images per forward pass; each keeps its own caption. More needs more VRAM.",
                              min=1, max=64)
    grad_accumulation: int = setting(1, "Batches summed per optimizer step (effective batch = batch_size x this).",
                                     min=1, max=1024)
    max_grad_norm: float = setting(1.0, "Gradient clipping norm; 0 disables clipping.", min=0.0, max=100.0, step=0.1)
    sigma_sampling: str = setting("sigmoid", "How noise levels are drawn: sigmoid = sigmoid(N(0,1)) (ai-toolkit, "
                                             "x-flux); shift = sigmoid, then shifted by sigma_shift toward more noise "
                                             "(kohya, FluxGym); flux_shift = shifted by FLUX's resolution-dependent "
                                             "shift; uniform.", choices=SIGMA_SAMPLERS)
    sigma_shift: float = setting(DEFAULT_SHIFT, "The shift of sigma_sampling 'shift' (3.1582 = FLUX's own shift at "
                                                "1024 px).", min=0.1, max=20.0, step=0.0001,
                                 only="sigma_sampling 'shift'")
    loss_weighting: str = setting("none", "Per-noise-level loss weight: none (plain velocity MSE, what FLUX trainers "
                                          "use), sigma_sqrt, cosmap (SD3's schemes).", choices=LOSS_WEIGHTINGS)
    caption_dropout: float = setting(0.05, "Share of samples trained with an empty caption: keeps the LoRA working "
                                           "without its trigger. 0.05-0.1 is common; 0 disables.",
                                     min=0.0, max=0.9, step=0.01)
    train_guidance: float = setting(1.0, "The distilled-guidance input of FLUX.1-dev / FLUX.2-dev while training. "
                                         "1.0 is what ai-toolkit, kohya and SimpleTuner train dev LoRAs with (samples "
                                         "still use 3.5). Models without one (schnell, klein, Chroma) need 1.0.",
                                    min=0.0, max=10.0, step=0.1)
    gradient_checkpointing: bool = setting(True, "Recompute block activations in the backward pass: far less VRAM, "
                                                 "one extra forward pass per step (~30% more compute). Results are the same either way.",
                                           only="memory and speed")
    targets: str = setting("all linear", "Layers that get LoRA: 'all linear' (every Linear of the double and single "
                                         "blocks, kohya's set) or 'attention' (attention projections; single blocks' "
                                         "fused linear1/linear2).", choices=tuple(TARGET_PRESETS))
    blocks: str = setting("all", "Which blocks train: 'all', or e.g. 'double 0-18, single 0-37', 'single 7-20'.")
    lora_dropout: float = setting(0.0, "Dropout on the LoRA input (regularisation; 0 is the usual choice).",
                                  min=0.0, max=0.9, step=0.01)
    use_dora: bool = setting(False, "DoRA (weight-decomposed LoRA). Needs an unquantized (bf16) model; the file is "
                                    "saved in kohya format.")
    save_every: int = setting(250, "Every N steps the LoRA so far is saved into the run's folder (it appears in the "
                                   "LoRA list at once: try it while training goes on) together with the training "
                                   "state, so the run can be resumed. Also on Cancel and at the end. 0: only then.",
                              min=0, max=100_000, only="the files written", resumable=True)
    validation_images: int = setting(0, "Images held out of training to measure a validation loss (fixed noise and "
                                        "noise levels, so it compares step to step). 0: no validation. 2-3 of 20+ "
                                        "images; noisy with fewer.", min=0, max=16)
    validation_every: int = setting(100, "Steps between validation losses (drawn on the chart and the loss curve).",
                                    min=1, max=100_000, only="validation", resumable=True)
    early_stopping_patience: int = setting(0, "Stop when the validation loss has not improved for this many "
                                              "validations in a row. 0: never stop early.", min=0, max=1000,
                                           only="validation", resumable=True)
    early_stopping_min_delta: float = setting(0.0, "How much lower the validation loss must be to count as an "
                                                   "improvement for early stopping.", min=0.0, max=10.0, step=0.0001,
                                              only="early stopping", resumable=True)
    output_lora: str = setting("last step", "What the node outputs: the LoRA of the last step, or of the step with the "
                                            "lowest validation loss (also saved in the run's folder).",
                               choices=("last step", "best validation"), only="validation", resumable=True)
    ema: bool = setting(False, "Keep an exponential moving average (EMA) of the LoRA weights: smooths out the noise of "
                               "the last steps, often a cleaner LoRA (ai-toolkit, SimpleTuner). On: every LoRA the run "
                               "gives (checkpoint files and samples, validation, the output) is the average; the "
                               "file's metadata says so. One more copy of the LoRA in VRAM.")
    ema_decay: float = setting(0.999, "How slowly the EMA follows the training: it averages about the last "
                                      "1/(1-decay) steps (0.999: ~1000; 0.99 for runs under ~1000 steps). Warms up "
                                      "as diffusers' EMAModel does: min(decay, (1+n)/(10+n)) after n steps.",
                               min=0.5, max=0.99999, step=0.0001, only="ema")
    adapter: str = setting("lora", "lora: low-rank adapter (with optional DoRA). lokr: LyCORIS LoKr, a Kronecker "
                                   "product adapter. loha: LyCORIS LoHa, the elementwise product of two low-rank "
                                   "pairs (rank r reaches up to r^2; twice LoRA's parameters). LoKr and LoHa are saved in "
                                   "LyCORIS keys (kohya format); try a higher learning rate, e.g. 1e-3.",
                           choices=ADAPTER_TYPES)
    lokr_factor: int = setting(-1, "LoKr's Kronecker factor: each weight is split into blocks of about this size "
                                   "(-1: as square as possible). Smaller: fewer parameters.", min=-1, max=256,
                               only="adapter 'lokr'")
    init: str = setting("default", "How the LoRA starts. default: B = 0 (no change at step 0). lora_ga: aligned with "
                                   "the gradient of a few batches (converges faster; costs a few passes first). "
                                   "pissa / olora: from the base weights' principal directions. All start from the "
                                   "unchanged model; the file is a normal LoRA (rank 2 x rank for the last three).",
                        choices=INITS)
    preservation: str = setting("off", "Keeps the model's idea of the class (e.g. 'a woman') from drifting toward your "
                                       "subject. regularization images: also trains on a second dataset of class "
                                       "images (connect it to 'regularization'). differential output: pulls the "
                                       "LoRA's prediction for class_prompt toward the untouched model's (no images "
                                       "needed; two extra forward passes and one backward per step).", choices=PRESERVATION_MODES)
    class_prompt: str = setting("", "The class your subject belongs to, e.g. 'a photo of a woman' (differential "
                                    "output; also the caption of regularization images that have none).",
                                only="preservation")
    prior_loss_weight: float = setting(1.0, "Weight of the preservation loss next to the training loss.", min=0.0,
                                       max=10.0, step=0.05, only="preservation")
    prodigy_d_coef: float = setting(1.0, "Prodigy's d_coef: scales the step size it finds (0.5 is gentler).",
                                    min=0.01, max=10.0, step=0.05, only="optimizer 'prodigy'")
    vram: str = setting("auto", "The GPU memory to plan for. auto: what is free on this GPU now (other models are "
                                "unloaded first). A size: never use more than that (e.g. to leave room for other "
                                "programs). Picks base_weights and how much of them stays in VRAM when those are on "
                                "auto; the run is checked to fit before any image is encoded.", choices=VRAM_TIERS,
                        only="memory and speed", resumable=True)
    base_weights: str = setting("auto", "Format of the frozen model weights training runs against. as loaded: the "
                                        "MODEL as it is (best quality). fp8: a copy in fp8 (half of bf16). nf4: a 4-bit "
                                        "QLoRA copy (bitsandbytes, a quarter of bf16; slightly less exact). auto: the "
                                        "best that fits the vram setting. The LoRA works on the MODEL you load, "
                                        "whichever is used.", choices=BASE_WEIGHTS)
    gpu_weights_gb: float = setting(0.0, "GiB of base weights kept in VRAM; the rest stays in system RAM and streams "
                                         "to the GPU every step (ComfyUI's partial loading: slower, same result). 0: "
                                         "automatic (as much as fits).", min=0.0, max=1024.0, step=0.5,
                                    only="memory and speed", resumable=True)
    reference_dropout: float = setting(0.0, "Edit pairs only (Kontext, FLUX.2): share of steps trained with fewer "
                                            "references - none for one-reference pairs (plain text-to-image, so the "
                                            "LoRA also works without one), a random subset of several. 0: always "
                                            "with all of them.", min=0.0, max=1.0, step=0.01, only="edit pairs")
    assistant_lora: str = setting("", "A LoRA file (name in models/loras) applied to the model while training only: "
                                      "not saved into your LoRA, not in checkpoint samples. Required for FLUX.1-schnell: "
                                      "ostris' FLUX.1-schnell-training-adapter keeps its few-step distillation intact "
                                      "(ai-toolkit's method). Empty: none.")
    compile_blocks: bool = setting(False, "Compile the blocks' training forward with torch.compile (one compiled graph "
                                          "shared by all blocks). Faster steps on a GPU once compiled; compiling takes "
                                          "a minute or two at the start (again for each new image size). Needs Triton "
                                          "on NVIDIA GPUs (a C++ compiler on the CPU). Results are the same up to "
                                          "float rounding.", only="memory and speed", resumable=True)
    fp8_matmul: bool = setting(False, "Multiply by the frozen fp8 base weights in fp8 (torch._scaled_mm) instead of "
                                      "casting them to bf16 first: faster on GPUs with fp8 tensor cores (RTX 40xx/50xx, "
                                      "H100 and newer), slightly less exact (each layer's input is rounded to fp8 too). "
                                      "Needs fp8 base weights: base_weights 'auto' then picks 'fp8'.")

    def __post_init__(self):
        problems = []
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta["choices"] is not None and value not in meta["choices"]:
                problems.append(f"{f.name} must be one of {list(meta['choices'])}, not {value!r}")
            if meta["min"] is not None and value < meta["min"]:
                problems.append(f"{f.name} must be at least {meta['min']}, not {value}")
            if meta["max"] is not None and value > meta["max"]:
                problems.append(f"{f.name} must be at most {meta['max']}, not {value}")
        if self.warmup_steps >= self.steps and self.warmup_steps > 0:
            problems.append(f"warmup_steps ({self.warmup_steps}) must be fewer than steps ({self.steps})")
        if self.output_lora == "best validation" and self.validation_images == 0:
            problems.append("output_lora 'best validation' needs validation_images > 0")
        if self.optimizer == "prodigy" and self.learning_rate < 0.1:
            problems.append(f"prodigy finds its own step size and multiplies it by the learning rate: set learning_rate "
                            f"to 1.0 (now {self.learning_rate:g})")
        if self.base_weights in ("fp8", "nf4") and (self.use_dora or self.init != "default"):
            problems.append(f"base_weights '{self.base_weights}' trains against a quantized copy, which "
                            f"{'DoRA' if self.use_dora else 'init ' + repr(self.init)} cannot use: set base_weights "
                            "'as loaded' (or turn that off)")
        elif self.fp8_matmul and (self.use_dora or self.init != "default"):
            problems.append(f"fp8_matmul trains against an fp8 copy, which "
                            f"{'DoRA' if self.use_dora else 'init ' + repr(self.init)} cannot use: turn fp8_matmul off")
        if self.fp8_matmul and self.base_weights not in ("auto", "fp8"):
            problems.append(f"fp8_matmul multiplies by fp8 base weights: set base_weights to 'fp8' or 'auto' (not "
                            f"'{self.base_weights}'), or turn fp8_matmul off")
        if self.preservation == "differential output" and not self.class_prompt.strip():
            problems.append("preservation 'differential output' needs a class_prompt (e.g. 'a photo of a woman')")
        if not problems:
            try:
                self.lora
            except ValueError as e:
                problems.append(str(e).rstrip("."))
        if problems:
            raise ValueError("Invalid training settings: " + "; ".join(problems) + ".")

    @property
    def effective_alpha(self) -> float:
        return float(self.alpha) if self.alpha > 0 else float(self.rank)

    @property
    def lora(self) -> LoraSettings:
        return LoraSettings(rank=self.rank, alpha=self.effective_alpha, dropout=self.lora_dropout,
                            use_dora=self.use_dora, targets=self.targets, blocks=self.blocks, adapter=self.adapter,
                            init=self.init, lokr_factor=self.lokr_factor)

    def with_changes(self, **changes) -> "TrainSettings":
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ValueError(f"Unknown training settings: {', '.join(unknown)}.")
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_preset(cls, preset: str, **changes) -> "TrainSettings":
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset '{preset}'; choose one of {list(PRESETS)}.")
        return cls(**PRESETS[preset]).with_changes(**changes)


def declared() -> list:
    """(name, type, default, metadata) of every setting, in declaration order."""
    return [(f.name, f.type, f.default, f.metadata) for f in fields(TrainSettings)]


def resumable_names() -> set:
    return {name for name, _, _, meta in declared() if meta["resumable"]}


def basic_names() -> list:
    return [name for name, _, _, meta in declared() if meta["basic"]]


def advanced_names() -> list:
    return [name for name, _, _, meta in declared() if not meta["basic"]]


# Starting points, each a complete set of settings (what is not listed keeps the TrainSettings default). Sources:
# ai-toolkit's FLUX example config (1e-4, rank 16, sigmoid, caption dropout 0.05), kohya's recommended FLUX settings
# (shift 3.1582, guidance 1.0), ai-toolkit's Gradio UI for the quick run (1000 steps at 4e-4), SimpleTuner's caption
# dropout 0.1. The README's settings table lists them (tests check that it matches).
PRESETS = {
    "balanced": {},
    "subject / likeness": {"sigma_sampling": "shift"},
    "style": {"steps": 2000, "rank": 32, "caption_dropout": 0.1},
    "fast test": {"steps": 250, "learning_rate": 4e-4, "rank": 8, "caption_dropout": 0.0},
}
PRESET_NOTES = {
    "balanced": "a safe start for most subjects and styles",
    "subject / likeness": "a person, pet or object: more training at high noise, where shape and identity form",
    "style": "an artistic style: rank 32 for detail, more steps, more caption dropout",
    "fast test": "checks a setup in minutes; not a finished LoRA",
}
DEFAULT_PRESET = "balanced"
