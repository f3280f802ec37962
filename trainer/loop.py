"""The training loop: noise -> predict -> loss -> step over encoded examples, on a clone of ComfyUI's MODEL."""
from contextlib import contextmanager

import torch

import comfy.model_management as mm
import comfy.utils

from . import objective
from .blocks import install_training_blocks
from .comfy_features import comfy_training_mode
from .examples import collate, epoch_batches
from .flux_model import flux_info
from .lora import INJECTION_KEY, FluxLoRA
from .optim import make_optimizer, make_scheduler
from .predict import predict_velocity
from .result import RunInfo, TrainedLoRA
from .settings import TrainSettings
from .vram import materialize_inference_params, training_memory_estimate

PREVIEW_SIZE = 768  # longest side of the checkpoint preview ComfyUI shows on the node


class TrainingHooks:
    """What a caller hears from :func:`train_flux_lora`; override what you need. With ``checkpoint_every`` > 0,
    ``on_checkpoint`` runs every that many steps and after the last one."""
    checkpoint_every = 0

    def on_step(self, step: int, total: int, loss: float, lr: float):
        """After every optimizer step."""

    def on_checkpoint(self, step: int, weights: dict):
        """Gets the LoRA so far (ComfyUI keys). May load other models (training reloads its own afterwards). May
        return a PIL image: ComfyUI shows it as the node's progress preview."""

    def on_interrupt(self, partial: TrainedLoRA):
        """Cancel arrived after at least one finished step: the LoRA of the finished steps, before the interruption
        propagates."""


def batch_loss(patcher, examples, indices, settings: TrainSettings, generator: torch.Generator, device, empty_caption=None):
    """Flow-matching loss of one batch; noise, sigmas and caption dropout come from ``generator`` (CPU, reproducible)."""
    latents, context, pooled = collate([examples[i] for i in indices], empty_caption, settings.caption_dropout, generator)
    x0 = latents.to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    image_tokens = (x0.shape[-2] // 2) * (x0.shape[-1] // 2)
    sigmas = objective.sample_sigmas(settings.sigma_sampling, x0.shape[0], generator,
                                     shift=settings.sigma_shift, image_tokens=image_tokens)
    xt = objective.noisy_latents(x0, noise, sigmas.to(device))
    prediction = predict_velocity(patcher, xt, sigmas, context, pooled, settings.train_guidance)
    weights = objective.loss_weights(settings.loss_weighting, sigmas).to(device)
    return objective.flow_matching_loss(prediction, objective.velocity_target(x0, noise), weights)


def _rng_devices(device):
    return [device] if torch.device(device).type == "cuda" else []


def load_for_training(patcher, memory_required: int):
    """(Re)loads the training patcher through ComfyUI. Every load, not only the first: weights that other nodes
    (re)created under inference mode meanwhile (e.g. sampling loads offloaded modules) must become trainable again."""
    mm.load_models_gpu([patcher], memory_required=memory_required)
    materialize_inference_params(patcher.model.diffusion_model, patcher.load_device)


@contextmanager
def training_patcher(model, examples: list, settings: TrainSettings):
    """A loaded training clone of ``model`` with LoRA layers injected and the grad-correct block forward.

    Yields ``(patcher, lora, memory_required)``. On exit (normal, error or Interrupt) the LoRA layers are
    ejected and the injection removed, so the shared model is exactly as before. Call inside
    ``torch.inference_mode(False)``.
    """
    info = flux_info(model)
    patcher = model.clone()
    lora = FluxLoRA(patcher.model.diffusion_model, settings.lora, model.load_device)
    try:
        patcher.set_injections(INJECTION_KEY, [lora.injection()])
        install_training_blocks(patcher, settings.gradient_checkpointing)
        largest = max(examples, key=lambda e: e.latent.shape[-2] * e.latent.shape[-1] + e.context.shape[0])
        memory = training_memory_estimate(
            image_tokens=(largest.latent.shape[-2] // 2) * (largest.latent.shape[-1] // 2),
            text_tokens=largest.context.shape[0], hidden=info.hidden_size, blocks=info.depth + info.depth_single_blocks,
            batch=settings.batch_size, checkpointing=settings.gradient_checkpointing,
            trainable_params=sum(p.numel() for p in lora.parameters()))
        load_for_training(patcher, memory)
        lora.requires_grad_(True)
        yield patcher, lora, memory
    finally:
        lora.requires_grad_(False)
        patcher.eject_model()
        patcher.remove_injections(INJECTION_KEY)
        lora.detach()


def run_info(model, examples: list, settings: TrainSettings, dataset=None, preset: str = "") -> RunInfo:
    largest = max(examples, key=lambda e: e.latent.shape[-2] * e.latent.shape[-1])
    return RunInfo(settings=settings, preset=preset, model=flux_info(model), dataset=dataset, examples=len(examples),
                   pixel_size=(int(largest.latent.shape[-1]) * 8, int(largest.latent.shape[-2]) * 8))


def train_flux_lora(model, examples: list, settings: TrainSettings, hooks: TrainingHooks = None, empty_caption=None,
                    dataset=None, preset: str = "") -> TrainedLoRA:
    """Trains a LoRA on ``model`` (a ComfyUI MODEL holding FLUX.1) and returns its weights.

    The MODEL itself is never modified: training happens on a clone whose LoRA layers are injected only while it is
    loaded, and every exit path (including Interrupt and errors) ejects them. ``empty_caption`` (context, pooled) is
    needed for caption dropout. ``dataset`` (a DatasetInfo) and ``preset`` are recorded in the result's info.
    """
    if not examples:
        raise ValueError("No training examples.")
    if settings.caption_dropout > 0 and empty_caption is None:
        raise ValueError("caption dropout needs the empty caption's embedding")
    hooks = hooks or TrainingHooks()
    info = run_info(model, examples, settings, dataset, preset)
    device = model.load_device
    with torch.inference_mode(False), torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        with training_patcher(model, examples, settings) as (patcher, lora, memory):
            params = lora.parameters()
            optimizer = make_optimizer(settings.optimizer, params, settings.learning_rate)
            scheduler = make_scheduler(settings.scheduler, optimizer, settings.warmup_steps, settings.steps)
            batches = epoch_batches(examples, settings.batch_size, generator)
            progress = comfy.utils.ProgressBar(settings.steps)
            losses, learning_rates = [], []
            try:
                for step in range(settings.steps):
                    mm.throw_exception_if_processing_interrupted()
                    if not lora.attached:  # another clone of this model was loaded meanwhile (e.g. preview sampling)
                        load_for_training(patcher, memory)
                    step_loss = 0.0
                    with comfy_training_mode():  # forward and backward (with its recompute) take the same code paths
                        for _ in range(settings.grad_accumulation):
                            loss = batch_loss(patcher, examples, next(batches), settings, generator, device, empty_caption)
                            (loss / settings.grad_accumulation).backward()
                            step_loss = step_loss + loss.detach() / settings.grad_accumulation
                    step_loss = float(step_loss)  # one device sync per step, not per micro-batch
                    if settings.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                    lr = scheduler.get_last_lr()[0]
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(step_loss)
                    learning_rates.append(lr)
                    preview = None
                    done = step + 1
                    every = hooks.checkpoint_every
                    if every > 0 and (done % every == 0 or done == settings.steps):
                        weights = lora.comfy_state_dict()
                        patcher.eject_model()  # other code sees the plain model (e.g. LoRA key names); re-injected on reload
                        image = hooks.on_checkpoint(done, weights)
                        preview = ("JPEG", image, PREVIEW_SIZE) if image is not None else None
                    progress.update_absolute(done, settings.steps, preview)  # in the server this also raises on Cancel
                    hooks.on_step(done, settings.steps, step_loss, lr)
            except mm.InterruptProcessingException:
                # Cancel can arrive at a step start, inside sampling or in the progress hook: keep the finished steps
                if losses:
                    hooks.on_interrupt(TrainedLoRA(lora.comfy_state_dict(), info.after(losses), losses, learning_rates))
                raise
            weights = lora.comfy_state_dict()
    return TrainedLoRA(weights, info.after(losses), losses, learning_rates)
