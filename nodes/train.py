"""FluxLoRATrain node."""
import logging
import os

import torch
from PIL import Image

import comfy.sd
import folder_paths
from comfy_api.latest import io, ui

from ..trainer import objective
from ..trainer.cache import EncodingCache
from ..trainer.examples import Encoder, sources_from_dataset, sources_from_image_batch, split_captions
from ..trainer.export import lora_file_bytes, write_new_file
from ..trainer.lora import TARGET_PRESETS, LoraSettings
from ..trainer.loop import TrainSettings, train_flux_lora
from ..trainer.optim import OPTIMIZERS, SCHEDULERS
from ..trainer.plot import loss_curve_image
from ..trainer.preview import PromptSet, labelled_grid, render
from ..trainer.vram import release
from .live import LiveRun, register_routes
from .types import FLUX_DATASET, FLUX_SAMPLE_SETTINGS, LORA_MODEL, LOSS_MAP

register_routes()


INTERRUPTED_PREFIX = "fluxlora_interrupted/lora"


def cache_folder():
    """Encoded latents / captions persist here across runs and restarts; safe to delete."""
    return os.path.join(folder_paths.get_user_directory(), "fluxlora_cache")


def save_interrupted_run(partial):
    """Cancel keeps the work done so far: the LoRA at the last finished step goes to loras/fluxlora_interrupted/."""
    path = write_new_file(folder_paths.get_folder_paths("loras")[0], INTERRUPTED_PREFIX, partial.info["steps"],
                          lora_file_bytes(partial, "kohya", "bf16"))
    folder_paths.filename_list_cache.pop("loras", None)
    logging.warning(f"Flux LoRA training interrupted after {partial.info['steps']} steps; saved the LoRA so far to {path}")


class FluxLoRATrain(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_Train",
            display_name="Flux LoRA Train",
            category="FluxLoRA",
            is_output_node=True,
            hidden=[io.Hidden.unique_id],
            description="Trains a FLUX.1-dev LoRA on the MODEL ComfyUI already loaded (it is left unchanged).",
            inputs=[
                io.Model.Input("model", tooltip="FLUX.1-dev from 'Load Diffusion Model' (fp8_e4m3fn weight dtype saves VRAM). "
                                                "It is not modified; a trained copy is output."),
                io.Clip.Input("clip", tooltip="FLUX text encoders (DualCLIPLoader, type 'flux'). Captions are encoded once, "
                                              "then the encoders are moved out of VRAM."),
                io.Vae.Input("vae", tooltip="FLUX VAE (ae.safetensors). Images are encoded once, then the VAE leaves VRAM."),
                FLUX_DATASET.Input("dataset", optional=True,
                                   tooltip="Training data from Dataset Loader (-> AutoCaption -> Trigger Word). "
                                           "Or leave empty and connect images + captions."),
                io.Image.Input("images", optional=True,
                               tooltip="Instead of a dataset: an IMAGE batch (all one size; sides cropped to multiples of 16)."),
                FLUX_SAMPLE_SETTINGS.Input("samples", optional=True,
                                           tooltip="Test Sampler settings: render sample images every N steps during "
                                                   "training (shown on the node as soon as they exist)."),
                io.String.Input("captions", multiline=True, default="", optional=True,
                                tooltip="With images: one caption per line, in image order; or a single line for every "
                                        "image. Include your trigger word."),
                io.Int.Input("steps", default=1000, min=1, max=100000,
                             tooltip="Optimizer steps. 1000-2500 suits 10-30 images."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-7, max=1.0, step=1e-6, round=1e-7,
                               tooltip="1e-4 to 4e-4 is typical for rank 16-32 with AdamW."),
                io.Int.Input("rank", default=16, min=1, max=256, tooltip="LoRA rank: capacity and file size. 16-32 is typical."),
                io.Float.Input("alpha", default=16.0, min=0.01, max=1024.0, step=0.5,
                               tooltip="LoRA alpha; the update is scaled by alpha/rank. alpha = rank gives scale 1."),
                io.Combo.Input("optimizer", options=list(OPTIMIZERS), default="adamw",
                               tooltip="adamw: reliable default. adamw8bit (bitsandbytes): less VRAM for optimizer state. "
                                       "adafactor: least memory."),
                io.Combo.Input("scheduler", options=list(SCHEDULERS), default="constant",
                               tooltip="Learning-rate schedule after warmup (transformers' implementations)."),
                io.Int.Input("warmup_steps", default=0, min=0, max=100000, tooltip="Linear learning-rate warmup steps."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Images per micro-batch. Each image keeps its own caption."),
                io.Int.Input("grad_accumulation", default=1, min=1, max=1024,
                             tooltip="Micro-batches summed per optimizer step (effective batch = batch_size x this)."),
                io.Float.Input("max_grad_norm", default=1.0, min=0.0, max=100.0, step=0.1,
                               tooltip="Gradient clipping norm; 0 disables clipping."),
                io.Combo.Input("sigma_sampling", options=list(objective.SIGMA_SAMPLERS), default="sigmoid",
                               tooltip="How noise levels are drawn: sigmoid (ai-toolkit default), shift (by sigma_shift), "
                                       "flux_shift (shift from the image resolution), logit_normal (SD3), uniform."),
                io.Float.Input("sigma_shift", default=objective.DEFAULT_SHIFT, min=0.1, max=20.0, step=0.0001, round=0.0001,
                               tooltip="Shift for sigma_sampling 'shift' (3.1582 = FLUX's shift at 1024px). Unused otherwise."),
                io.Combo.Input("loss_weighting", options=list(objective.LOSS_WEIGHTINGS), default="none",
                               tooltip="Per-noise-level loss weight: none (plain velocity MSE), sigma_sqrt, cosmap."),
                io.Float.Input("caption_dropout", default=0.0, min=0.0, max=0.9, step=0.01,
                               tooltip="Chance of training a sample with an empty caption (helps the LoRA work without "
                                       "the trigger too). 0.05-0.1 is common; 0 disables."),
                io.Float.Input("guidance", default=1.0, min=0.0, max=10.0, step=0.1,
                               tooltip="Guidance embedding value during training. 1.0 is right for FLUX.1-dev."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seeds LoRA init, noise, sigmas and image order: same seed, same LoRA."),
                io.Boolean.Input("gradient_checkpointing", default=True,
                                 tooltip="Recompute block activations in backward: much less VRAM, somewhat slower."),
                io.Combo.Input("targets", options=list(TARGET_PRESETS), default="all linear",
                               tooltip="Layers that get LoRA: 'all linear' (every Linear of the double and single blocks) "
                                       "or 'attention' (attention projections; single blocks' fused linear1/linear2)."),
                io.String.Input("blocks", default="all",
                                tooltip="Which blocks to train: 'all', or e.g. 'double 0-18, single 0-37', 'single 7-20'."),
                io.Float.Input("dropout", default=0.0, min=0.0, max=0.9, step=0.01, tooltip="LoRA dropout."),
                io.Boolean.Input("dora", default=False,
                                 tooltip="DoRA (weight-decomposed LoRA). Needs an unquantized model; saves in kohya format."),
            ],
            outputs=[
                LORA_MODEL.Output("lora", tooltip="The trained LoRA: connect to 'Save Flux LoRA'."),
                io.Model.Output("model", tooltip="The input MODEL with the LoRA applied as a normal ComfyUI patch."),
                LOSS_MAP.Output("loss", tooltip="Loss per step ({'loss': [...]})."),
                io.Image.Output("loss_curve", tooltip="Loss (raw and moving average), learning rate and checkpoints."),
                io.Image.Output("samples", tooltip="Test Sampler images of every checkpoint, one row per checkpoint "
                                                   "(a blank image when no Test Sampler is connected)."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, vae, steps, learning_rate, rank, alpha, optimizer, scheduler, warmup_steps, batch_size,
                grad_accumulation, max_grad_norm, sigma_sampling, sigma_shift, loss_weighting, caption_dropout, guidance,
                seed, gradient_checkpointing, targets, blocks, dropout, dora, dataset=None, images=None,
                captions="", samples=None) -> io.NodeOutput:
        settings = TrainSettings(
            steps=steps, learning_rate=learning_rate, optimizer=optimizer, scheduler=scheduler,
            warmup_steps=warmup_steps, batch_size=batch_size, grad_accumulation=grad_accumulation,
            max_grad_norm=max_grad_norm, sigma_sampling=sigma_sampling, sigma_shift=sigma_shift,
            loss_weighting=loss_weighting, caption_dropout=caption_dropout, guidance=guidance, seed=seed,
            gradient_checkpointing=gradient_checkpointing,
            lora=LoraSettings(rank=rank, alpha=alpha, dropout=dropout, use_dora=dora, targets=targets, blocks=blocks))
        settings.validate()
        if dataset is not None and images is not None:
            raise ValueError("Connect either a dataset or images (+ captions) to Flux LoRA Train, not both.")
        if dataset is not None:
            sources, repeats = sources_from_dataset(dataset), dataset.repeats
            data_info = {"trigger": dataset.trigger, "dataset_hash": dataset.fingerprint(), "dataset_dir": dataset.folder,
                         "crop": dataset.crop, "pixel_resolution": [dataset.resolution, dataset.resolution]}
            uncaptioned = [im.name for im in dataset.images if not im.caption]
            if uncaptioned:
                logging.warning(f"Flux LoRA Train: {len(uncaptioned)} image(s) have no caption: {', '.join(uncaptioned[:5])}")
        elif images is not None:
            sources, repeats = sources_from_image_batch(images, split_captions(captions, images.shape[0])), 1
            data_info = {"pixel_resolution": [int(sources[0].pixels.shape[1]), int(sources[0].pixels.shape[0])]}
        else:
            raise ValueError("Flux LoRA Train needs training data: connect a dataset (Dataset Loader) or an IMAGE batch "
                             "with captions.")
        cache = EncodingCache(cache_folder())
        encoder = Encoder(model, clip, vae, cache)
        examples = encoder.examples(sources, repeats)
        empty = encoder.text("") if caption_dropout > 0 else None
        rows, labels, checkpoints, on_checkpoint = [], [], [], None
        live = LiveRun(cls.hidden.unique_id if cls.hidden is not None else "headless", steps)
        if samples is not None:
            prompt_set = PromptSet(clip, samples, data_info.get("trigger", ""))  # encoded before CLIP leaves VRAM

            def on_checkpoint(step, weights):
                rows.append(render(model, vae, prompt_set, weights))
                labels.append(f"step {step}")
                checkpoints.append(step)
                grid = labelled_grid(rows[-1:], labels[-1:])[0]
                pil = Image.fromarray((grid.numpy() * 255).round().astype("uint8"))
                live.samples(step, pil)
                return ("JPEG", pil, 768)
        release(clip.patcher, vae.patcher)
        lora = train_flux_lora(model, examples, settings, on_interrupt=save_interrupted_run, empty_caption=empty,
                               data_info=data_info, checkpoint_every=samples.every_n_steps if samples else 0,
                               on_checkpoint=on_checkpoint, on_step=live.step)
        live.finish()
        with torch.inference_mode(False):
            curve = loss_curve_image(lora.losses, lora.learning_rates, markers=checkpoints)
        sample_grid = labelled_grid(rows, labels) if rows else torch.zeros(1, 64, 64, 3)
        model_with_lora, _ = comfy.sd.load_lora_for_models(model, None, dict(lora), 1.0, 0)
        shown = ui.PreviewImage(curve, cls=cls).as_dict()
        shown["loss"] = [round(v, 6) for v in lora.losses]
        shown["encoded"] = [{"images": encoder.images_encoded, "captions": encoder.captions_encoded,
                             "cache_hits": cache.hits}]
        if rows:
            shown["images"] += ui.PreviewImage(sample_grid, cls=cls).as_dict()["images"]
        shown["checkpoints"] = checkpoints
        return io.NodeOutput(lora, model_with_lora, {"loss": list(lora.losses)}, curve, sample_grid, ui=shown)
