"""One training run as the train node starts it: check the MODEL, encode the dataset once (through the on-disk cache),
move the encoders out of VRAM, train with samples at checkpoints, and assemble what the node outputs."""
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

import comfy.sd

from pathlib import Path

from . import checkpoint
from .cache import EncodingCache, NoCache
from .dataset import is_paired
from .examples import Encoder, sources_from_dataset
from .assistant import with_assistant
from .blocks import check_trainable_blocks, compile_problem
from .flux_model import check_clip, check_schnell, check_vae, flux_info
from .images import to_pil
from .loop import RunFolder, TrainingHooks, train_flux_lora
from .lora import dense_weights_problem
from .lora_init import rank_problem
from .memory_plan import Plan, plan_run
from .plot import loss_curve_image
from .preservation import Preservation
from .result import TrainedLoRA
from .sampling import PromptSet, SampleSettings, labelled_grid, render
from .settings import TrainSettings, resumable_names
from .slider import STRENGTHS, SliderPrompts, SliderSpec, check_slider_settings
from .sysmem import SpillWatch, fallback_advice, spills_silently
from .validation import ValidationSet, split_indices
from .vram import release


class RunHooks:
    """What the node hears from a run; override what you need."""

    def on_step(self, step: int, total: int, loss: float, lr: float):
        """After every optimizer step."""

    def on_samples(self, step: int, grid):
        """A checkpoint's samples as one labelled PIL image."""

    def on_plan(self, text: str):
        """The VRAM plan (base weight format, streaming, estimated peak and why), before any encoding."""

    def on_stage(self, text: str):
        """What the run does before its first step (e.g. 'encoding 3/20 images')."""

    def on_validation(self, step: int, loss: float):
        """After each validation loss."""

    def on_saved(self, step: int, path: str):
        """A checkpoint's LoRA file was written (it is in the LoRA list)."""

    def on_warning(self, text: str):
        """Something to show on the node that does not stop the run (also logged), e.g. a checkpoint that could not be
        written."""

    def on_interrupt(self, partial: TrainedLoRA):
        """The run was cancelled after at least one step: the LoRA of the finished steps."""


@dataclass
class RunOutputs:
    lora: TrainedLoRA
    model: object                   # the input MODEL with the LoRA applied as a normal ComfyUI patch
    loss_curve: torch.Tensor        # (1, H, W, 3)
    sample_grid: Optional[torch.Tensor]  # (1, H, W, 3), one row per checkpoint; None without sample settings
    checkpoints: list = field(default_factory=list)   # steps with samples
    saved: list = field(default_factory=list)         # LoRA files written into the run folder
    warnings: list = field(default_factory=list)      # what the run warned about (e.g. checkpoints not written)
    images_encoded: int = 0
    captions_encoded: int = 0
    cache_hits: int = 0
    plan: Optional[Plan] = None     # how VRAM was used (base weight format, offload) and why


class _CheckpointSamples(TrainingHooks):
    """Renders the sample prompts at each checkpoint and passes progress on to the node's hooks."""

    def __init__(self, hooks: RunHooks, model, vae, prompts: Optional[PromptSet], label: str = "step {}",
                 strengths=(1.0,)):
        self.hooks, self.model, self.vae, self.prompts, self.label = hooks, model, vae, prompts, label
        self.strengths = strengths   # a slider's strip: every prompt at each LoRA strength, the same seed
        self.checkpoint_every = prompts.settings.every_n_steps if prompts is not None else 0
        self.rows, self.steps, self.saved, self.warnings = [], [], [], []
        self.spill_watch = SpillWatch() if spills_silently(model.load_device) else None   # Windows + CUDA
        self.last_step = None

    def on_step(self, step, total, loss, lr):
        now = time.perf_counter()
        if self.spill_watch is not None and self.last_step is not None:
            warning = self.spill_watch.step(now - self.last_step)
            if warning:
                logging.warning(warning)
        self.last_step = now
        self.hooks.on_step(step, total, loss, lr)

    def on_interrupt(self, partial):
        self.hooks.on_interrupt(partial)

    def on_validation(self, step, loss):
        self.last_step = None   # the next interval includes the validation: not a step time
        self.hooks.on_validation(step, loss)

    def on_saved(self, step, path):
        self.saved.append(path)
        self.hooks.on_saved(step, path)

    def on_warning(self, text):
        self.warnings.append(text)
        self.hooks.on_warning(text)

    def on_checkpoint(self, step, weights):
        images = torch.cat([render(self.model, self.vae, self.prompts, weights, strength=s) for s in self.strengths])
        self.rows.append(self.prompts.row(images))
        self.steps.append(step)
        grid = to_pil(labelled_grid(self.rows[-1:], [self.label.format(step)]))
        self.hooks.on_samples(step, grid)
        self.last_step = None   # sampling took time: the next interval is not a step time
        return grid

    def grid(self):
        return labelled_grid(self.rows, [self.label.format(s) for s in self.steps]) if self.rows else None


def _check_adapters(model, settings: TrainSettings):
    """Refuses adapters this MODEL cannot train (DoRA or a PiSSA-style init on quantized weights, a LoRA-GA rank wider
    than a layer) and blocks the training forward cannot stand in for. These depend on the MODEL and the settings
    alone: checked here, before any encoding, not when the adapters are built after it."""
    dm = model.model.diffusion_model
    for problem in (dense_weights_problem(dm, settings.lora), rank_problem(dm, settings.lora)):
        if problem:
            raise ValueError(problem)
    check_trainable_blocks(model)


def _resume(runs_root, resume: str, identity: dict, settings: TrainSettings):
    """The run folder and saved state to continue from, after checking that they fit (None, None: a new run)."""
    if resume in ("", "off", None):
        return None, None
    if not runs_root:
        raise ValueError("Resuming needs the runs folder (this node has none).")
    path = checkpoint.find_run(runs_root, resume)
    saved = checkpoint.load_state(path)
    checkpoint.check_resumable(saved, identity, settings.as_dict(), resumable_names(), TrainSettings().as_dict())
    return path, saved


def train_run(model, clip, vae, dataset, settings: TrainSettings, *, preset: str = "",
              sample_settings: Optional[SampleSettings] = None, hooks: Optional[RunHooks] = None,
              cache_root: Optional[str] = None, runs_root: Optional[str] = None, resume: str = "off",
              regularization=None, slider: Optional[SliderSpec] = None) -> RunOutputs:
    """Trains a LoRA on ``dataset`` (a FluxDataset) with ComfyUI's MODEL/CLIP/VAE; the MODEL is left unchanged.

    With ``runs_root`` the run gets its own folder there for checkpoints; ``resume`` ('latest' or a run folder's name)
    continues a saved run instead. ``regularization`` (a FluxDataset of class images) is trained on alongside, for
    preservation 'regularization images'. ``slider`` trains a slider LoRA from its prompts (the dataset's images give the
    noisy latents only). Everything that can be checked is checked before the first image is encoded."""
    hooks = hooks or RunHooks()
    info = flux_info(model)
    check_schnell(info, settings)
    check_clip(clip, model)
    check_vae(vae, model)
    if info.family == "chroma" and (is_paired(dataset) or (sample_settings is not None
                                                           and sample_settings.reference_images)):
        raise ValueError("Reference images (edit LoRAs) are for FLUX.1 Kontext and FLUX.2; ComfyUI's Chroma has no "
                         "reference input. Remove the control folder / reference image, or load FLUX.1 Kontext dev or "
                         "FLUX.2 [klein].")
    if not dataset.images:
        raise ValueError("The dataset has no images.")
    problem = compile_problem(model.load_device) if settings.compile_blocks else ""
    if problem:
        raise ValueError(problem)
    if settings.reference_dropout > 0 and not is_paired(dataset):
        raise ValueError(f"reference_dropout is {settings.reference_dropout:g}, but the dataset has no control images "
                         "(it applies to edit pairs only): set it to 0, or give Dataset Loader a control_folder.")
    if (regularization is not None) != (settings.preservation == "regularization images"):
        raise ValueError("Regularization images need both: a dataset connected to 'regularization' and preservation set "
                         "to 'regularization images'" + (" (a dataset is connected but preservation is "
                                                          f"'{settings.preservation}')." if regularization is not None
                                                          else " (no dataset is connected)."))
    _check_adapters(model, settings)
    if slider is not None:
        slider.check()
        check_slider_settings(settings)
        if regularization is not None or is_paired(dataset):
            raise ValueError("A slider trains from its prompts: connect no regularization dataset and no control images.")
    image_tokens = max((im.bucket[0] // 16) * (im.bucket[1] // 16) * (1 + len(im.controls))   # edit pairs: + each
                       for im in dataset.images + (regularization.images if regularization else ()))  # reference
    plan = plan_run(model, settings, image_tokens)   # refuses a run that cannot fit, before any encoding
    trained_model = with_assistant(model, settings.assistant_lora.strip()) if settings.assistant_lora.strip() else model
    advice = fallback_advice(plan, model.load_device)   # Windows: a run near the card's size may spill silently
    logging.info(f"Flux LoRA Train: {plan.describe()}")
    if advice:
        logging.warning(f"Flux LoRA Train: {advice}")
    ema_note = (f" Samples, validation and the saved LoRAs use the EMA of the weights (decay {settings.ema_decay:g})."
                if settings.ema else "")
    hooks.on_plan(plan.describe() + (f" {advice}" if advice else "") + ema_note)
    train_ids, val_ids = split_indices(len(dataset.images), settings.validation_images, settings.seed)
    identity = {"dataset": dataset.fingerprint() + (regularization.fingerprint() if regularization else ""),
                "model": checkpoint.model_identity(model), "settings": settings.as_dict(),
                "base_weights": plan.base_weights, **({"slider": slider.as_dict()} if slider else {})}
    run_path, saved = _resume(runs_root, resume, identity, settings)
    uncaptioned = [im.name for im in dataset.images if not im.caption]
    if uncaptioned:
        logging.warning(f"Flux LoRA Train: {len(uncaptioned)} image(s) have no caption: {', '.join(uncaptioned[:5])}")
    cache = EncodingCache(cache_root) if cache_root else NoCache()
    encoder = Encoder(model, clip, vae, cache)
    encoder.on_progress = lambda done, total: hooks.on_stage(f"encoding images {done}/{total}")
    hooks.on_stage(f"encoding {len(dataset.images)} images and their captions (cached ones are read)")
    examples = encoder.examples(sources_from_dataset(dataset))
    hooks.on_stage("preparing the training copy")
    empty_caption = encoder.text("") if settings.caption_dropout > 0 else None
    slider_prompts = None
    if slider is not None:
        slider_prompts = SliderPrompts(encoder.text(slider.target), encoder.text(slider.positive),
                                       encoder.text(slider.negative), slider.guidance_strength, slider.as_dict())
    preservation = None
    if settings.preservation == "regularization images":
        class_sources = sources_from_dataset(regularization)
        for source in class_sources:
            source.caption = source.caption or settings.class_prompt
        preservation = Preservation(settings.preservation, settings.prior_loss_weight,
                                    examples=encoder.examples(class_sources))
    elif settings.preservation == "differential output":
        preservation = Preservation(settings.preservation, settings.prior_loss_weight,
                                    class_text=encoder.text(settings.class_prompt.strip()))
    # sample prompts are encoded now, before the text encoders leave VRAM
    prompts = None
    if sample_settings is not None:
        references = sample_settings.reference_images
        if not references and is_paired(dataset):   # samples edit a held-out (else the first) pair's references
            references = tuple(c.float() / 255.0 for c in dataset.images[(val_ids or [0])[0]].controls)
        prompts = PromptSet(clip, sample_settings, dataset.trigger, vae, references)
    release(clip.patcher, vae.patcher)
    validation = ValidationSet.build([examples[i] for i in val_ids], settings.seed) if val_ids else None
    if runs_root and run_path is None:
        run_path = checkpoint.new_run_folder(runs_root, dataset.trigger or Path(dataset.folder or "lora").name)
    label = "step {}" + (" (EMA)" if settings.ema else "") + ("\n-1 | 0 | +1" if slider else "")   # STRENGTHS
    loop_hooks = _CheckpointSamples(hooks, model, vae, prompts, label, STRENGTHS if slider else (1.0,))
    lora = train_flux_lora(trained_model, [examples[i] for i in train_ids], settings, loop_hooks, empty_caption,
                           dataset.describe(), preset, validation, RunFolder(run_path, identity) if run_path else None,
                           saved, preservation, plan, slider_prompts)
    with torch.inference_mode(False):
        curve = loss_curve_image(lora.losses, lora.learning_rates, markers=loop_hooks.steps,
                                 validation=lora.info.validation)
    model_with_lora, _ = comfy.sd.load_lora_for_models(model, None, dict(lora), 1.0, 0)
    return RunOutputs(lora=lora, model=model_with_lora, loss_curve=curve, sample_grid=loop_hooks.grid(),
                      checkpoints=list(loop_hooks.steps), saved=list(loop_hooks.saved),
                      warnings=list(loop_hooks.warnings),
                      images_encoded=encoder.images_encoded, captions_encoded=encoder.captions_encoded,
                      cache_hits=cache.hits, plan=plan)
