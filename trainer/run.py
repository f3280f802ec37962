"""One training run as the train node starts it: check the MODEL, encode the dataset once (through the on-disk cache),
move the encoders out of VRAM, train with samples at checkpoints, and assemble what the node outputs."""
import logging
from dataclasses import dataclass, field
from typing import Optional

import torch

import comfy.sd

from .cache import EncodingCache, NoCache
from .examples import Encoder, sources_from_dataset
from .flux_model import flux_info
from .images import to_pil
from .loop import TrainingHooks, train_flux_lora
from .plot import loss_curve_image
from .result import TrainedLoRA
from .sampling import PromptSet, SampleSettings, labelled_grid, render
from .settings import TrainSettings
from .vram import release


class RunHooks:
    """What the node hears from a run; override what you need."""

    def on_step(self, step: int, total: int, loss: float, lr: float):
        """After every optimizer step."""

    def on_samples(self, step: int, grid):
        """A checkpoint's samples as one labelled PIL image."""

    def on_interrupt(self, partial: TrainedLoRA):
        """The run was cancelled after at least one step: the LoRA of the finished steps."""


@dataclass
class RunOutputs:
    lora: TrainedLoRA
    model: object                   # the input MODEL with the LoRA applied as a normal ComfyUI patch
    loss_curve: torch.Tensor        # (1, H, W, 3)
    sample_grid: Optional[torch.Tensor]  # (1, H, W, 3), one row per checkpoint; None without sample settings
    checkpoints: list = field(default_factory=list)
    images_encoded: int = 0
    captions_encoded: int = 0
    cache_hits: int = 0


class _CheckpointSamples(TrainingHooks):
    """Renders the sample prompts at each checkpoint and passes progress on to the node's hooks."""

    def __init__(self, hooks: RunHooks, model, vae, prompts: Optional[PromptSet]):
        self.hooks, self.model, self.vae, self.prompts = hooks, model, vae, prompts
        self.checkpoint_every = prompts.settings.every_n_steps if prompts is not None else 0
        self.rows, self.steps = [], []

    def on_step(self, step, total, loss, lr):
        self.hooks.on_step(step, total, loss, lr)

    def on_interrupt(self, partial):
        self.hooks.on_interrupt(partial)

    def on_checkpoint(self, step, weights):
        self.rows.append(render(self.model, self.vae, self.prompts, weights))
        self.steps.append(step)
        grid = to_pil(labelled_grid(self.rows[-1:], [f"step {step}"]))
        self.hooks.on_samples(step, grid)
        return grid

    def grid(self):
        return labelled_grid(self.rows, [f"step {s}" for s in self.steps]) if self.rows else None


def train_run(model, clip, vae, dataset, settings: TrainSettings, *, preset: str = "",
              sample_settings: Optional[SampleSettings] = None, hooks: Optional[RunHooks] = None,
              cache_root: Optional[str] = None) -> RunOutputs:
    """Trains a LoRA on ``dataset`` (a FluxDataset) with ComfyUI's MODEL/CLIP/VAE; the MODEL is left unchanged."""
    hooks = hooks or RunHooks()
    flux_info(model)  # a wrong MODEL fails here, before any encoding
    if not dataset.images:
        raise ValueError("The dataset has no images.")
    uncaptioned = [im.name for im in dataset.images if not im.caption]
    if uncaptioned:
        logging.warning(f"Flux LoRA Train: {len(uncaptioned)} image(s) have no caption: {', '.join(uncaptioned[:5])}")
    cache = EncodingCache(cache_root) if cache_root else NoCache()
    encoder = Encoder(model, clip, vae, cache)
    examples = encoder.examples(sources_from_dataset(dataset))
    empty_caption = encoder.text("") if settings.caption_dropout > 0 else None
    # sample prompts are encoded now, before the text encoders leave VRAM
    prompts = PromptSet(clip, sample_settings, dataset.trigger) if sample_settings is not None else None
    release(clip.patcher, vae.patcher)
    loop_hooks = _CheckpointSamples(hooks, model, vae, prompts)
    lora = train_flux_lora(model, examples, settings, loop_hooks, empty_caption, dataset.describe(), preset)
    with torch.inference_mode(False):
        curve = loss_curve_image(lora.losses, lora.learning_rates, markers=loop_hooks.steps)
    model_with_lora, _ = comfy.sd.load_lora_for_models(model, None, dict(lora), 1.0, 0)
    return RunOutputs(lora=lora, model=model_with_lora, loss_curve=curve, sample_grid=loop_hooks.grid(),
                      checkpoints=list(loop_hooks.steps), images_encoded=encoder.images_encoded,
                      captions_encoded=encoder.captions_encoded, cache_hits=cache.hits)
