"""The training loop: noise -> predict -> loss -> step over encoded examples, on a clone of ComfyUI's MODEL, with
checkpoints (and resume), validation and early stopping, and a guard against steps whose loss is not finite."""
import logging
import math
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import torch

import comfy.model_management as mm
import comfy.utils

from . import checkpoint, lora_init, objective
from .blocks import install_training_blocks
from .comfy_features import comfy_training_mode
from .divergence import WeightsBefore, finite_prediction
from .ema import AdapterEMA
from .examples import collate, collate_references, epoch_batches
from .export import lora_file_bytes
from .files import write_replacing
from .flux_model import flux_info
from .lora import INJECTION_KEY, FluxLoRA
from .optim import make_optimizer, make_scheduler
from .predict import predict_velocity
from .preservation import differential_output_loss
from .result import RunInfo, TrainedLoRA
from .settings import TrainSettings
from .slider import SliderPrompts, slider_loss
from .validation import EarlyStopping
from .base_weights import training_copy
from .memory_plan import Plan, plan_run
from .vram import materialize_inference_params, release

PREVIEW_SIZE = 768    # longest side of the checkpoint preview ComfyUI shows on the node
MAX_BAD_STEPS = 5     # non-finite steps in a row before the run stops


class TrainingDiverged(RuntimeError):
    pass


class TrainingHooks:
    """What a caller hears from :func:`train_flux_lora`; override what you need. With ``checkpoint_every`` > 0,
    ``on_checkpoint`` runs every that many steps and after the last one."""
    checkpoint_every = 0

    def on_step(self, step: int, total: int, loss: float, lr: float):
        """After every optimizer step (not after a step skipped for a non-finite loss)."""

    def on_validation(self, step: int, loss: float):
        """After each validation loss."""

    def on_checkpoint(self, step: int, weights: dict):
        """Gets the LoRA so far (ComfyUI keys). May load other models (training reloads its own afterwards). May
        return a PIL image: ComfyUI shows it as the node's progress preview."""

    def on_saved(self, step: int, path: str):
        """A checkpoint's LoRA file was written."""

    def on_warning(self, text: str):
        """Something the user should know that does not stop the run (it is logged too), e.g. a checkpoint that could
        not be written."""

    def on_interrupt(self, partial: TrainedLoRA):
        """Cancel arrived after at least one finished step: the LoRA of the finished steps, before the interruption
        propagates."""


@dataclass
class RunFolder:
    """Where checkpoints go, and what a resume must match (dataset, model, settings)."""
    path: object       # pathlib.Path
    identity: dict


@dataclass
class TrainState:
    step: int = 0                      # optimizer steps done, skipped ones included
    losses: list = field(default_factory=list)
    learning_rates: list = field(default_factory=list)
    validation: list = field(default_factory=list)   # [step, loss]
    skipped: int = 0
    bad_in_a_row: int = 0
    batches_drawn: int = 0
    stopped_early: bool = False
    best_weights: Optional[dict] = None

    def history(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "best_weights"}


def batch_loss(patcher, examples, indices, settings: TrainSettings, generator: torch.Generator, device, empty_caption=None):
    """Flow-matching loss of one batch; noise, sigmas and caption dropout come from ``generator`` (CPU, reproducible)."""
    return _batch(patcher, examples, indices, settings, generator, device, empty_caption)[0]


def _noised(latents, settings, generator, device, patch: int = 2):
    """(clean latents, noise, noisy latents, sigmas) on ``device``; noise, then sigmas, drawn from ``generator``."""
    x0 = latents.to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    image_tokens = latent_tokens(x0, patch)
    sigmas = objective.sample_sigmas(settings.sigma_sampling, x0.shape[0], generator,
                                     shift=settings.sigma_shift, image_tokens=image_tokens)
    return x0, noise, objective.noisy_latents(x0, noise, sigmas.to(device)), sigmas


def _batch(patcher, examples, indices, settings, generator, device, empty_caption):
    """(loss, noisy latents, sigmas) of one batch."""
    batch = [examples[i] for i in indices]
    latents, context, pooled = collate(batch, empty_caption, settings.caption_dropout, generator)
    references = collate_references(batch, settings.reference_dropout, generator)
    x0, noise, xt, sigmas = _noised(latents, settings, generator, device, patch_size(patcher))
    prediction = predict_velocity(patcher, xt, sigmas, context, pooled, settings.train_guidance, references)
    weights = objective.loss_weights(settings.loss_weighting, sigmas).to(device)
    return objective.flow_matching_loss(prediction, objective.velocity_target(x0, noise), weights), xt, sigmas


def _rng_devices(device):
    return [device] if torch.device(device).type == "cuda" else []


def load_for_training(patcher, plan: Plan):
    """(Re)loads the training patcher through ComfyUI, keeping at most the plan's share of the base weights in VRAM
    (ComfyUI's partial loading streams the rest). Every load, not only the first: weights that other nodes
    (re)created under inference mode meanwhile (e.g. sampling loads offloaded modules) must become trainable again."""
    mm.load_models_gpu([patcher], memory_required=plan.other_bytes)
    excess = patcher.loaded_size() - plan.gpu_weight_bytes
    if plan.offloaded and excess > 0:
        patcher.partially_unload(patcher.offload_device, excess)
    materialize_inference_params(patcher.model.diffusion_model, patcher.load_device)


def patch_size(patcher) -> int:
    """Latent pixels per token side: 2 (FLUX.1, Chroma: 2x2 patches of 16 channels), 1 (FLUX.2: 128 channels)."""
    return int(getattr(patcher.model.diffusion_model, "patch_size", 2))


def latent_tokens(latent, patch: int) -> int:
    """The image tokens of a latent (C, h, w) or (B, C, h, w), as ComfyUI's Flux forward pads and patches it."""
    return -(-latent.shape[-2] // patch) * -(-latent.shape[-1] // patch)


def largest_image_tokens(examples, patch: int) -> int:
    """Image tokens of the longest example: the image's, plus its reference images' (edit pairs)."""
    return max(latent_tokens(e.latent, patch) + sum(latent_tokens(r, patch) for r in e.references) for e in examples)


@contextmanager
def training_patcher(model, examples: list, settings: TrainSettings, plan: Optional[Plan] = None):
    """A loaded training clone of ``model`` with LoRA layers injected and the grad-correct block forward; with base
    weights 'fp8' / 'nf4' in the plan, a training copy in that format instead of a clone.

    Yields ``(patcher, lora, plan)``. On exit (normal, error or Interrupt) the LoRA layers are
    ejected and the injection removed (a training copy is dropped), so the shared model is exactly as before. Call
    inside ``torch.inference_mode(False)``.
    """
    flux_info(model)
    plan = plan or plan_run(model, settings, largest_image_tokens(examples, patch_size(model)))
    copied = plan.base_weights != "as loaded"
    patcher = (training_copy(model, plan.base_weights, in_ram=plan.offloaded, fp8_matmul=settings.fp8_matmul,
                             room_bytes=plan.weight_bytes) if copied else model.clone())
    lora = FluxLoRA(patcher.model.diffusion_model, settings.lora, model.load_device)
    try:
        patcher.set_injections(INJECTION_KEY, [lora.injection()])
        install_training_blocks(patcher, settings.gradient_checkpointing, settings.compile_blocks)
        load_for_training(patcher, plan)
        lora.requires_grad_(True)
        yield patcher, lora, plan
    finally:
        lora.requires_grad_(False)
        patcher.eject_model()
        patcher.remove_injections(INJECTION_KEY)
        lora.detach()
        if copied:
            release(patcher)


def run_info(model, examples: list, settings: TrainSettings, dataset=None, preset: str = "", run: str = "") -> RunInfo:
    largest = max(examples, key=lambda e: e.latent.shape[-2] * e.latent.shape[-1])
    return RunInfo(settings=settings, preset=preset, model=flux_info(model), dataset=dataset, examples=len(examples),
                   pixel_size=(int(largest.latent.shape[-1]) * 8, int(largest.latent.shape[-2]) * 8), run=run)


def noise_seed(seed: int) -> int:
    """The noise / noise level / caption dropout stream's seed (the data order uses ``seed`` itself)."""
    return (seed + 1) % 2 ** 64


def _total_norm(params, max_norm: float):
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])


class _Checkpoints:
    """Writes a run's checkpoints: the LoRA file (listed by LoraLoader) and the training state to resume from."""

    def __init__(self, run: Optional[RunFolder], info: RunInfo, lora, optimizer, scheduler, noise_gen, stopper, device,
                 ema: Optional[AdapterEMA] = None):
        self.run, self.info, self.lora, self.optimizer, self.scheduler = run, info, lora, optimizer, scheduler
        self.noise_gen, self.stopper, self.device, self.ema = noise_gen, stopper, device, ema

    def averaged(self, averaged: bool = True):
        """A ``with`` block in which the adapter holds what the run gives: the EMA weights where the run keeps one
        (``averaged`` False: the trained weights)."""
        return self.ema.applied() if self.ema is not None and averaged else nullcontext()

    def weights(self, averaged: bool = True) -> dict:
        """The LoRA the run gives now (ComfyUI keys): the EMA weights where the run keeps one."""
        with self.averaged(averaged):
            return self.lora.comfy_state_dict()

    def result(self, state: TrainState, weights=None, steps_done=None, averaged: bool = True) -> TrainedLoRA:
        info = self.info.after(state.step if steps_done is None else steps_done, state.losses, state.skipped,
                               state.validation, self.stopper.best_step if state.validation else None,
                               state.stopped_early)
        info = replace(info, ema=self.ema is not None and averaged)
        return TrainedLoRA(self.weights(averaged) if weights is None else weights, info, state.losses,
                           state.learning_rates)

    def save(self, state: TrainState, weights_step: Optional[int] = None, averaged: bool = True) -> Optional[str]:
        """The LoRA file (named by ``weights_step``, the step its weights are from: the current one unless given;
        ``averaged`` False: the trained weights, not the EMA) and the training state."""
        if self.run is None:
            return None
        step = state.step if weights_step is None else weights_step
        path = checkpoint.lora_file_name(self.run.path, step)
        write_replacing(str(path), lora_file_bytes(self.result(state, steps_done=step, averaged=averaged), "kohya",
                                                   "bf16"))
        checkpoint.save_state(self.run.path, {
            "run": self.run.path.name, "step": state.step, "identity": self.run.identity,
            "lora": self.lora.trainable_state(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": checkpoint.rng_state(self.noise_gen, self.device),
            "history": state.history(), "early_stopping": asdict(self.stopper), "best_weights": state.best_weights,
            "ema": self.ema.state_dict() if self.ema is not None else None})
        return str(path)

    def restore(self, saved: dict, state: TrainState):
        self.lora.load_trainable_state(saved["lora"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        checkpoint.restore_rng(saved["rng"], self.noise_gen, self.device)
        for key, value in saved["history"].items():
            setattr(state, key, value)
        state.best_weights = saved.get("best_weights")
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        for key, value in saved["early_stopping"].items():
            setattr(self.stopper, key, value)


def _diverged(settings, state, kept: str):
    """The error that stops a diverged run; ``kept`` says which LoRA was kept (see :func:`_keep_on_divergence`)."""
    last_good = state.step - state.bad_in_a_row
    return TrainingDiverged(
        f"Training diverged: the loss or its gradients were not finite for {state.bad_in_a_row} steps in a row (steps "
        f"{last_good + 1}-{state.step}); those steps were skipped and the run stopped. Lower the learning rate (now "
        f"{settings.learning_rate:g}) or the LoRA scale alpha/rank (now {settings.effective_alpha:g}/{settings.rank}), "
        f"or clip gradients (max_grad_norm, now {settings.max_grad_norm:g})." + kept)


def _keep_on_divergence(model, patcher, before: WeightsBefore, checkpoints, state: TrainState, example) -> str:
    """Keeps a LoRA of the diverged run that can still be used and says which, as a sentence of the message ('' without
    a run folder). The weights of the last step with a finite loss came out of the update that started the divergence
    and may already overflow the model, so the candidates are the weights from before that update, then the run's
    checkpoint files, latest first; each is kept only if one forward of the MODEL with it is finite."""
    if checkpoints.run is None:
        return ""
    patcher.eject_model()   # the check applies the LoRA to the MODEL as a plain patch, as LoraLoader does
    if before.step:   # a copy from after at least one update (step 0 would be a LoRA that changes nothing)
        before.restore()
        if finite_prediction(model, checkpoints.lora.comfy_state_dict(), example):
            path = _save_quietly(checkpoints, state, before.step, averaged=False)   # the weights just checked
            if not path:
                return (f" The LoRA from before the update that started it (step {before.step}) gives finite output, "
                        "but it could not be saved (see the log).")
            return (f" The LoRA from before the update that started it (step {before.step}) gives finite output on "
                    f"this MODEL and is saved as {path}.")
    limit = before.step if before.step is not None else state.step - state.bad_in_a_row + 1
    for step, path in checkpoint.lora_files(checkpoints.run.path):
        if step < limit and finite_prediction(model, comfy.utils.load_torch_file(str(path), safe_load=True), example):
            return (f" The weights from before the update that started it already overflow this MODEL's output; the "
                    f"latest checkpoint that does not is step {step}: {path}.")
    return (" No LoRA was kept: the weights of the steps before it already overflow this MODEL's output (samples "
            "would be black). Start a new run with the lower setting.")


def _save_or_warn(hooks: TrainingHooks, folder, step: int, save, last: bool) -> Optional[str]:
    """Runs ``save`` (writes a file of step ``step`` into the run ``folder``, returns its path; ``last``: a save at the
    end of the run). A file that cannot be written (a full disk, a read-only folder) does not end the run: files.py
    leaves no partial file behind, the files written before are whole, and the LoRA in memory still reaches the node's
    output. So it is skipped with a warning, in the log and on the node."""
    try:
        path = save()
    except OSError as e:
        reason = e.strerror or str(e)
        warning = (f"Flux LoRA Train: the LoRA of step {step} could not be written into its run folder {folder} "
                   f"({reason}). It is still this node's output: save it with Save Flux LoRA where there is room (free "
                   "disk space first)." if last else
                   f"Flux LoRA Train: the checkpoint of step {step} could not be written into {folder} ({reason}); it "
                   "is skipped and training goes on. Free disk space there for the next checkpoints (the files saved "
                   "before are whole).")
        logging.warning(warning)
        hooks.on_warning(warning)
        return None
    hooks.on_saved(step, path)
    return path


def _gradient_batches(patcher, examples, settings, device):
    """LoRA-GA's gradient estimate: LORA_GA_BATCHES batches on their own random streams (the training's are untouched),
    with the adapters still at zero, i.e. the base model's gradient."""
    def run():
        noise = torch.Generator().manual_seed((noise_seed(settings.seed) + 2) % 2 ** 64)
        order = epoch_batches(examples, settings.batch_size, torch.Generator().manual_seed((settings.seed + 2) % 2 ** 64))
        with comfy_training_mode():
            for _ in range(lora_init.LORA_GA_BATCHES):
                batch_loss(patcher, examples, next(order), settings, noise, device).backward()
    return run


def train_flux_lora(model, examples: list, settings: TrainSettings, hooks: TrainingHooks = None, empty_caption=None,
                    dataset=None, preset: str = "", validation=None, run: Optional[RunFolder] = None,
                    resume: Optional[dict] = None, preservation=None, plan: Optional[Plan] = None,
                    slider: Optional[SliderPrompts] = None) -> TrainedLoRA:
    """Trains a LoRA on ``model`` (a ComfyUI MODEL holding FLUX.1) and returns its weights.

    The MODEL itself is never modified: training happens on a clone whose LoRA layers are injected only while it is
    loaded, and every exit path (including Interrupt and errors) ejects them. ``empty_caption`` (context, pooled) is
    needed for caption dropout. ``dataset`` (a DatasetInfo) and ``preset`` are recorded in the result's info.
    ``validation`` (a ValidationSet) is evaluated every ``settings.validation_every`` steps. With ``run``, checkpoints
    go to that run folder; ``resume`` (a state loaded from one) continues where it stopped. ``preservation`` (a
    preservation.Preservation) adds the regularization-image or differential-output loss. ``plan`` (memory_plan.Plan)
    says how VRAM is used; without one it is made here. ``slider`` (slider.SliderPrompts) trains a slider LoRA
    instead: the examples only give the noisy latents, the objective is :func:`.slider.slider_loss`.
    """
    if not examples:
        raise ValueError("No training examples.")
    if settings.caption_dropout > 0 and empty_caption is None:
        raise ValueError("caption dropout needs the empty caption's embedding")
    hooks = hooks or TrainingHooks()
    info = run_info(model, examples, settings, dataset, preset, run.path.name if run else "")
    if slider is not None:
        info = replace(info, slider=slider.described)
    device = model.load_device
    with torch.inference_mode(False), torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(settings.seed)
        noise_gen = torch.Generator().manual_seed(noise_seed(settings.seed))
        with training_patcher(model, examples, settings, plan) as (patcher, lora, plan):
            info = replace(info, base_weights=plan.base_weights)
            params = lora.parameters()
            if settings.lora.moves_base_weight and resume is None:
                seconds = lora_init.initialize(lora, settings.init, _gradient_batches(patcher, examples, settings, device))
                for p in params:
                    p.grad = None
                info = replace(info, init_seconds=seconds)
            optimizer = make_optimizer(settings.optimizer, params, settings.learning_rate,
                                       d_coef=settings.prodigy_d_coef, fused=torch.device(device).type == "cuda")
            scheduler = make_scheduler(settings.scheduler, optimizer, settings.warmup_steps, settings.steps)
            state, stopper = TrainState(), EarlyStopping(settings.early_stopping_patience, settings.early_stopping_min_delta)
            ema = AdapterEMA(params, settings.ema_decay) if settings.ema else None
            checkpoints = _Checkpoints(run, info, lora, optimizer, scheduler, noise_gen, stopper, device, ema)
            before = WeightsBefore(params)   # what a divergence falls back to
            if resume is not None:
                checkpoints.restore(resume, state)
                state.stopped_early = False  # resuming is asking for more steps
                checkpoints.info = info = replace(info, resumed_at=state.step)
            batches = epoch_batches(examples, settings.batch_size, torch.Generator().manual_seed(settings.seed))
            regularization = preservation.examples if preservation is not None and preservation.examples else None
            reg_batches = (epoch_batches(regularization, settings.batch_size,
                                         torch.Generator().manual_seed((settings.seed + 1) % 2 ** 64))
                           if regularization else None)
            for _ in range(state.batches_drawn):  # the data order continues where the saved run stopped
                next(batches)
                if reg_batches is not None:
                    next(reg_batches)
            progress = comfy.utils.ProgressBar(settings.steps)
            if state.step:
                progress.update_absolute(state.step, settings.steps)
            try:
                while state.step < settings.steps and not state.stopped_early:
                    mm.throw_exception_if_processing_interrupted()
                    if not lora.attached:  # another clone of this model was loaded meanwhile (e.g. preview sampling)
                        load_for_training(patcher, plan)
                    step_loss = torch.zeros((), device=device)
                    with comfy_training_mode():  # forward and backward (with its recompute) take the same code paths
                        for _ in range(settings.grad_accumulation):
                            if slider is not None:   # backward inside, once per polarity
                                batch = torch.stack([examples[i].latent for i in next(batches)])
                                xt, sigmas = _noised(batch, settings, noise_gen, device, patch_size(patcher))[2:]
                                state.batches_drawn += 1
                                step_loss = step_loss + slider_loss(
                                    patcher, lora, xt, sigmas, slider, settings.train_guidance,
                                    backward=1 / settings.grad_accumulation) / settings.grad_accumulation
                                continue
                            loss, xt, sigmas = _batch(patcher, examples, next(batches), settings, noise_gen, device,
                                                      empty_caption)
                            state.batches_drawn += 1
                            total = loss
                            if reg_batches is not None:
                                total = total + preservation.weight * batch_loss(
                                    patcher, regularization, next(reg_batches), settings, noise_gen, device, empty_caption)
                            elif preservation is not None and preservation.class_text is not None:
                                total = total + preservation.weight * differential_output_loss(
                                    patcher, lora, xt.detach(), sigmas, preservation.class_text, settings.train_guidance)
                            (total / settings.grad_accumulation).backward()
                            step_loss = step_loss + loss.detach() / settings.grad_accumulation
                    norm = _total_norm(params, settings.max_grad_norm)
                    loss_value, norm_value = torch.stack([step_loss, norm.to(step_loss)]).tolist()  # one device sync
                    lr = scheduler.get_last_lr()[0]
                    state.step += 1
                    done = state.step
                    if math.isfinite(loss_value) and math.isfinite(norm_value):
                        before.take(done - 1)
                        optimizer.step()
                        if ema is not None:
                            ema.update()
                        state.losses.append(loss_value)
                        state.learning_rates.append(lr)
                        state.bad_in_a_row = 0
                    else:  # skip: the weights stay those of the last good step
                        state.skipped += 1
                        state.bad_in_a_row += 1
                        logging.warning(f"Flux LoRA Train: step {done} skipped, its loss or gradients are not finite")
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    if state.bad_in_a_row >= MAX_BAD_STEPS:
                        raise _diverged(settings, state,
                                        _keep_on_divergence(model, patcher, before, checkpoints, state, examples[0]))
                    last = done == settings.steps
                    if validation is not None and (done % settings.validation_every == 0 or last):
                        with comfy_training_mode(), checkpoints.averaged():
                            val = validation.loss(patcher, settings.train_guidance, device)
                        state.validation.append([done, val])
                        improved, state.stopped_early = stopper.update(done, val)
                        if improved:
                            state.best_weights = checkpoints.weights()
                        hooks.on_validation(done, val)
                    if (run is not None and settings.save_every and done % settings.save_every == 0 and not last
                            and not state.stopped_early and state.bad_in_a_row == 0):  # a skipped step changed nothing
                        _save_or_warn(hooks, run.path, done, lambda: checkpoints.save(state), last=False)
                    preview = None
                    every = hooks.checkpoint_every
                    if every > 0 and (done % every == 0 or last or state.stopped_early):
                        weights = checkpoints.weights()
                        patcher.eject_model()  # other code sees the plain model (e.g. LoRA key names); re-injected on reload
                        image = hooks.on_checkpoint(done, weights)
                        preview = ("JPEG", image, PREVIEW_SIZE) if image is not None else None
                    progress.update_absolute(done, settings.steps, preview)  # in the server this also raises on Cancel
                    if state.bad_in_a_row == 0:
                        hooks.on_step(done, settings.steps, loss_value, lr)
            except mm.InterruptProcessingException:
                # Cancel can arrive at a step start, inside sampling or in the progress hook: keep the finished steps
                if state.step > (info.resumed_at or 0):
                    path = _save_quietly(checkpoints, state)
                    if path:
                        hooks.on_saved(state.step, path)
                    hooks.on_interrupt(checkpoints.result(state))
                raise
            if run is not None:
                _save_or_warn(hooks, run.path, state.step, lambda: checkpoints.save(state), last=True)
            result = checkpoints.result(state)
            if settings.output_lora == "best validation" and state.best_weights is not None:
                best = TrainedLoRA(state.best_weights, replace(result.info, steps_done=stopper.best_step),
                                   result.losses, result.learning_rates)
                if run is not None:
                    path = str(checkpoint.lora_file_name(run.path, stopper.best_step, best=True))
                    _save_or_warn(hooks, run.path, stopper.best_step,
                                  lambda: write_replacing(path, lora_file_bytes(best, "kohya", "bf16")) or path, last=True)
                result = best
    return result


def _save_quietly(checkpoints: _Checkpoints, state: TrainState, weights_step: Optional[int] = None,
                  averaged: bool = True) -> Optional[str]:
    """A checkpoint on the way out (Cancel, divergence): a failure to write it is logged, not raised over the cause."""
    try:
        return checkpoints.save(state, weights_step, averaged)
    except Exception as e:  # e.g. a full disk: the Cancel still goes through
        logging.error(f"Flux LoRA Train: could not save the checkpoint at step {state.step} ({type(e).__name__}: {e})")
        return None
