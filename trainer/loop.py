"""The training loop: encode once -> noise -> predict -> loss -> step, on a clone of ComfyUI's MODEL."""
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch

import comfy.model_management as mm
import comfy.utils

from . import objective
from .blocks import install_training_blocks
from .comfy_features import comfy_training_mode
from .examples import collate, epoch_batches
from .flux_model import flux_info
from .lora import INJECTION_KEY, FluxLoRA, LoraSettings
from .optim import OPTIMIZERS, SCHEDULERS, make_optimizer, make_scheduler
from .predict import predict_velocity
from .result import TrainedLoRA
from .vram import materialize_inference_params, training_memory_estimate


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1000
    learning_rate: float = 1e-4
    optimizer: str = "adamw"
    scheduler: str = "constant"
    warmup_steps: int = 0
    batch_size: int = 1
    grad_accumulation: int = 1
    max_grad_norm: float = 1.0
    sigma_sampling: str = "sigmoid"
    sigma_shift: float = objective.DEFAULT_SHIFT
    loss_weighting: str = "none"
    guidance: float = 1.0
    caption_dropout: float = 0.0
    seed: int = 0
    gradient_checkpointing: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)

    def validate(self):
        checks = [
            (self.steps >= 1, "steps must be at least 1"),
            (self.learning_rate > 0, "learning rate must be positive"),
            (self.batch_size >= 1 and self.grad_accumulation >= 1, "batch size and gradient accumulation must be at least 1"),
            (self.lora.rank >= 1, "rank must be at least 1"),
            (self.lora.alpha > 0, "alpha must be positive"),
            (0 <= self.lora.dropout < 1, "LoRA dropout must be in [0, 1)"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.scheduler in SCHEDULERS, f"scheduler must be one of {SCHEDULERS}"),
            (0 <= self.warmup_steps < self.steps or self.warmup_steps == 0, "warmup steps must be fewer than steps"),
            (self.sigma_sampling in objective.SIGMA_SAMPLERS, f"sigma sampling must be one of {objective.SIGMA_SAMPLERS}"),
            (self.loss_weighting in objective.LOSS_WEIGHTINGS, f"loss weighting must be one of {objective.LOSS_WEIGHTINGS}"),
            (self.sigma_shift > 0, "sigma shift must be positive"),
            (0 <= self.caption_dropout < 1, "caption dropout must be in [0, 1)"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ValueError("Invalid training settings: " + "; ".join(problems) + ".")


def batch_loss(patcher, examples, indices, settings: TrainSettings, generator: torch.Generator, device, empty_caption=None):
    """Flow-matching loss of one batch; noise, sigmas and caption dropout come from ``generator`` (CPU, reproducible)."""
    latents, context, pooled = collate([examples[i] for i in indices], empty_caption, settings.caption_dropout, generator)
    x0 = latents.to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    image_tokens = (x0.shape[-2] // 2) * (x0.shape[-1] // 2)
    sigmas = objective.sample_sigmas(settings.sigma_sampling, x0.shape[0], generator,
                                     shift=settings.sigma_shift, image_tokens=image_tokens)
    xt = objective.noisy_latents(x0, noise, sigmas.to(device))
    prediction = predict_velocity(patcher, xt, sigmas, context, pooled, settings.guidance)
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


def _result(info, settings, examples, weights, losses, learning_rates, data_info) -> TrainedLoRA:
    run = asdict(settings)
    run.update(data_info or {})
    run.update(base_model=info.unet_config, model_weight_dtype=info.weight_dtype, model_compute_dtype=info.compute_dtype,
               examples=len(examples), resolution=list(examples[0].latent.shape[-2:]), steps=len(losses), planned_steps=settings.steps,
               final_loss=(sum(losses[-10:]) / len(losses[-10:])) if losses else None)
    return TrainedLoRA(weights, run, losses, learning_rates)


def train_flux_lora(model, examples: list, settings: TrainSettings, on_step=None, on_interrupt=None,
                    empty_caption=None, data_info=None, checkpoint_every: int = 0, on_checkpoint=None) -> TrainedLoRA:
    """Trains a LoRA on ``model`` (a ComfyUI MODEL holding FLUX.1) and returns its weights.

    The MODEL itself is never modified: training happens on a clone whose LoRA layers are injected
    only while it is loaded, and every exit path (including Interrupt and errors) ejects them.
    ``on_step(step, total, loss, lr)`` is called after every optimizer step. If the run is interrupted
    after at least one step, ``on_interrupt(partial TrainedLoRA)`` gets the weights so far, then the
    interruption propagates. ``empty_caption`` (context, pooled) is needed for caption dropout; ``data_info``
    (e.g. trigger word, dataset hash) is recorded in the result's info. Every ``checkpoint_every`` steps and
    after the last, ``on_checkpoint(step, weights)`` gets the LoRA so far (e.g. to render samples; it may load other
    models: training reloads its own afterwards); what it returns is shown as the progress preview.
    """
    settings.validate()
    if settings.caption_dropout > 0 and empty_caption is None:
        raise ValueError("caption dropout needs the empty caption's embedding")
    info = flux_info(model)
    if not examples:
        raise ValueError("No training examples.")
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
                    if on_checkpoint is not None and checkpoint_every > 0 and (done % checkpoint_every == 0 or done == settings.steps):
                        weights = lora.comfy_state_dict()
                        patcher.eject_model()  # other code sees the plain model (e.g. LoRA key names); re-injected on reload
                        preview = on_checkpoint(done, weights)
                    progress.update_absolute(done, settings.steps, preview)  # in the server this also raises on Cancel
                    if on_step is not None:
                        on_step(done, settings.steps, step_loss, lr)
            except mm.InterruptProcessingException:
                # Cancel can arrive at a step start, inside sampling or in the progress hook: keep the finished steps
                if losses and on_interrupt is not None:
                    steps_done = len(losses)
                    on_interrupt(_result(info, settings, examples, lora.comfy_state_dict(), losses[:steps_done],
                                         learning_rates[:steps_done], data_info))
                raise
            weights = lora.comfy_state_dict()
    return _result(info, settings, examples, weights, losses, learning_rates, data_info)
