"""Flux LoRA Slider Train node: a concept slider (e.g. old <-> young) trained from three prompts, no dataset."""
from comfy_api.latest import io

from ..trainer.settings import DEFAULT_PRESET, TrainSettings
from ..trainer.slider import DEFAULT_GUIDANCE_STRENGTH, SliderSpec
from ..trainer.slider_run import train_slider
from .folders import cache_folder, runs_folder
from .live import NodeRun, run_report, sample_grid, workflow_id
from .settings_widgets import setting_input
from .types import FLUX_LORA_ADVANCED, FLUX_SAMPLE_SETTINGS, LORA_MODEL, LOSS_MAP, search_aliases

# ai-toolkit's slider examples train small LoRAs briefly: rank 8 (alpha 4 there), a few hundred steps at 2e-4
SLIDER_DEFAULTS = {"steps": 500, "learning_rate": 2e-4, "rank": 8}


class _SliderRun(NodeRun):
    resume_hint = ""   # the slider node starts a new run each time


class FluxLoRASliderTrain(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        basic = [setting_input(name, default=SLIDER_DEFAULTS.get(name)) for name in ("steps", "learning_rate", "rank",
                                                                                    "seed")]
        return io.Schema(
            node_id="FluxLoRA_SliderTrain",
            display_name="Flux LoRA Slider Train",
            category="FluxLoRA",
            **search_aliases("concept slider", "slider lora", "train slider"),
            is_output_node=True,
            hidden=[io.Hidden.unique_id, io.Hidden.extra_pnginfo],
            description="Trains a concept slider LoRA from prompts alone (no dataset): at LoRA strength +1 the target "
                        "moves toward the positive prompt, at -1 toward the negative (ai-toolkit's concept-slider "
                        "loss). Use the file with LoraLoader; strength_model is the slider.",
            inputs=[
                io.Model.Input("model", tooltip="The model to train the slider for (FLUX.1-dev, FLUX.2 klein, Chroma, "
                                                "...). It is not modified."),
                io.Clip.Input("clip", tooltip="The model's text encoders (as for Flux LoRA Train)."),
                io.Vae.Input("vae", tooltip="The model's VAE: the target prompt's images are rendered and encoded once."),
                io.String.Input("target_prompt", default="a photo of a person",
                                tooltip="What the slider acts on. Without the concept itself: 'a photo of a person' "
                                        "for an age slider."),
                io.String.Input("positive_prompt", default="a photo of an old person",
                                tooltip="The +1 end: the target with the concept pushed one way."),
                io.String.Input("negative_prompt", default="a photo of a young person",
                                tooltip="The -1 end: the target with the concept pushed the other way."),
                io.Float.Input("guidance_strength", default=DEFAULT_GUIDANCE_STRENGTH, min=0.1, max=20.0, step=0.1,
                               tooltip="How far strength 1 moves along (positive - negative), in units of that "
                                       "difference (ai-toolkit's default 3). Lower for a subtler slider."),
                *basic,
                io.Int.Input("images", default=4, min=1, max=64,
                             tooltip="Images of the target prompt the model renders once (kept on disk) to train "
                                     "on: they give the noisy latents the slider learns at. 4-8 is plenty."),
                io.Int.Input("resolution", default=512, min=256, max=1536, step=64,
                             tooltip="Size of those images (square). Sliders learn a direction, not detail: 512 is "
                                     "fast and works at any size."),
                FLUX_SAMPLE_SETTINGS.Input("sample_settings", optional=True,
                                           tooltip="Test Sampler settings: every N steps each prompt is rendered at "
                                                   "strength -1, 0 and +1 with the same seed."),
                FLUX_LORA_ADVANCED.Input("advanced", optional=True,
                                         tooltip="Flux LoRA Advanced Settings (optimizer, targets, EMA, ...). Settings "
                                                 "a slider cannot use (caption dropout, validation, preservation, DoRA) "
                                                 "are refused."),
            ],
            outputs=[
                LORA_MODEL.Output("lora", tooltip="The slider LoRA: connect to 'Save Flux LoRA'."),
                LOSS_MAP.Output("loss", tooltip="Slider loss per step ({'loss': [...]})."),
                io.Image.Output("loss_curve", tooltip="Loss, learning rate and checkpoints."),
                io.Image.Output("sample_grid", tooltip="Per checkpoint: the prompts at strength -1 | 0 | +1 (a blank "
                                                       "image when no Test Sampler is connected)."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, vae, target_prompt, positive_prompt, negative_prompt, guidance_strength, steps,
                learning_rate, rank, seed, images, resolution, sample_settings=None, advanced=None) -> io.NodeOutput:
        settings = TrainSettings.from_preset(DEFAULT_PRESET, **{"caption_dropout": 0.0, **(advanced or {})},
                                             steps=steps, learning_rate=learning_rate, rank=rank, seed=seed)
        spec = SliderSpec(target_prompt, positive_prompt, negative_prompt, guidance_strength)
        live = _SliderRun(cls.hidden.unique_id if cls.hidden is not None else "headless", settings.steps,
                          workflow_id(cls.hidden))
        with live.reporting_errors():
            run = train_slider(model, clip, vae, spec, settings, images=images, resolution=resolution,
                               sample_settings=sample_settings, hooks=live, cache_root=cache_folder(),
                               runs_root=runs_folder())
        live.finish()
        return io.NodeOutput(run.lora, {"loss": list(run.lora.losses)}, run.loss_curve, sample_grid(run),
                             ui=run_report(cls, run))
