"""TestSampler node: sample prompts with a LoRA, now or at checkpoints during training."""
import torch
from comfy_api.latest import io, ui

from ..trainer.flux_model import check_clip, check_vae, flux_info
from ..trainer.result import TrainedLoRA
from ..trainer.sampling import PromptSet, SampleSettings, labelled_grid, parse_prompts, render
from .types import FLUX_SAMPLE_SETTINGS, LORA_MODEL

DEFAULT_PROMPTS = "{trigger}, a portrait photo, soft window light\n{trigger} in a forest at golden hour, cinematic"


class TestSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_TestSampler",
            display_name="Flux LoRA Test Sampler",
            category="FluxLoRA",
            is_output_node=True,
            description="Renders test prompts with a LoRA through ComfyUI's normal sampling (Euler, FLUX shift, "
                        "guidance), with fixed seeds so checkpoints compare. Connect 'settings' to Flux LoRA Train for "
                        "samples during training, or connect a model to render now.",
            inputs=[
                io.String.Input("prompts", multiline=True, default=DEFAULT_PROMPTS,
                                tooltip="One prompt per line; {trigger} is replaced by the trigger word."),
                io.String.Input("trigger", default="", tooltip="Trigger word for {trigger} (connect Trigger Word's output). "
                                                                "Empty: the trained dataset's trigger, if any (also during training)."),
                io.Int.Input("width", default=1024, min=256, max=2048, step=64, tooltip="Sample width."),
                io.Int.Input("height", default=1024, min=256, max=2048, step=64, tooltip="Sample height."),
                io.Int.Input("steps", default=20, min=1, max=100, tooltip="Euler steps per sample."),
                io.Float.Input("guidance", default=3.5, min=0.0, max=20.0, step=0.1,
                               tooltip="FLUX.1-dev / FLUX.2-dev: distilled guidance for samples (3.5 is FLUX.1-dev's "
                                       "usual value). FLUX.2 klein and Chroma (not guidance-distilled): the CFG scale "
                                       "against an empty prompt (about 4)."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Fixed seed, so every checkpoint's samples are comparable."),
                io.Int.Input("every_n_steps", default=250, min=1, max=100000,
                             tooltip="When connected to Flux LoRA Train: render samples every N training steps "
                                     "(and after the last)."),
                io.Model.Input("model", optional=True, tooltip="Render now with this MODEL (e.g. Flux LoRA Train's model "
                                                               "output, or FLUX + the lora input)."),
                io.Clip.Input("clip", optional=True, tooltip="Needed to render now."),
                io.Vae.Input("vae", optional=True, tooltip="Needed to render now."),
                LORA_MODEL.Input("lora", optional=True, tooltip="Applied to the model as a normal LoRA patch before rendering."),
                io.Image.Input("reference_image", optional=True,
                               tooltip="Edit LoRAs (FLUX.1 Kontext, FLUX.2): the image(s) each prompt edits, as "
                                       "ReferenceLatent nodes chained once per image pass them; a batch (Image Batch) "
                                       "gives several references, in order. Shown first in every row. During training "
                                       "on edit pairs without it, the first held-out (else first) pair's references "
                                       "are used."),
            ],
            outputs=[
                FLUX_SAMPLE_SETTINGS.Output("settings", tooltip="Connect to Flux LoRA Train's 'sample_settings' input."),
                io.Image.Output("images", tooltip="Grid of the rendered prompts, labelled with the LoRA's step count."),
            ],
        )

    @classmethod
    def execute(cls, prompts, trigger, width, height, steps, guidance, seed, every_n_steps, model=None, clip=None,
                vae=None, lora=None, reference_image=None) -> io.NodeOutput:
        references = tuple(image[:, :, :3] for image in reference_image) if reference_image is not None else ()
        settings = SampleSettings(parse_prompts(prompts), width, height, steps, guidance, seed, every_n_steps,
                                  trigger.strip(), references)
        if model is None or clip is None or vae is None:
            if any(x is not None for x in (model, clip, vae, lora)):
                raise ValueError("TestSampler: to render now connect model, clip and vae (lora is optional).")
            return io.NodeOutput(settings, torch.zeros(1, 64, 64, 3))
        flux_info(model)  # a clear message before any sampling for a wrong MODEL / CLIP / VAE
        check_clip(clip, model)
        check_vae(vae, model)
        trained = isinstance(lora, TrainedLoRA)
        if references and flux_info(model).family == "chroma":
            raise ValueError("TestSampler: Chroma takes no reference images (ComfyUI's Chroma has no reference "
                             "input); disconnect reference_image.")
        prompt_set = PromptSet(clip, settings, lora.info.trigger if trained else "", vae, references)
        images = render(model, vae, prompt_set, lora)
        label = f"step {lora.info.steps_done}" if trained else ("LoRA" if lora is not None else "model")
        grid = labelled_grid([prompt_set.row(images)], [label])
        return io.NodeOutput(settings, grid, ui=ui.PreviewImage(grid, cls=cls))
