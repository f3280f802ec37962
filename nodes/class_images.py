"""Flux LoRA Class Images node: regularization images of the subject's class, rendered once by the base model."""
import os

import folder_paths
from comfy_api.latest import io, ui

from ..trainer.class_images import class_images
from ..trainer.dataset import preview_grid
from ..trainer.flux_model import check_clip, check_vae, flux_info
from ..trainer.sampling import SampleSettings
from .types import FLUX_DATASET


class ClassImages(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_ClassImages",
            display_name="Flux LoRA Class Images",
            category="FluxLoRA",
            is_output_node=True,
            description="Renders images of the subject's class (e.g. 'a photo of a woman') with the untouched model, "
                        "for preservation 'regularization images'. Kept on disk: the same settings render nothing twice.",
            inputs=[
                io.Model.Input("model", tooltip="The FLUX.1-dev MODEL you train on (without your LoRA)."),
                io.Clip.Input("clip", tooltip="FLUX's text encoders (DualCLIPLoader: clip_l + t5xxl, type flux)."),
                io.Vae.Input("vae", tooltip="FLUX's VAE (ae.safetensors)."),
                io.String.Input("prompt", default="a photo of a person",
                                tooltip="The class, without your trigger word; also the images' caption."),
                io.Int.Input("count", default=10, min=1, max=200,
                             tooltip="How many images (about as many as your training images is common)."),
                io.Int.Input("width", default=1024, min=256, max=2048, step=64, tooltip="Match your training resolution."),
                io.Int.Input("height", default=1024, min=256, max=2048, step=64, tooltip="Match your training resolution."),
                io.Int.Input("steps", default=20, min=1, max=100, tooltip="Euler steps per image."),
                io.Float.Input("guidance", default=3.5, min=0.0, max=20.0, step=0.1, tooltip="Distilled guidance for FLUX.1-dev / FLUX.2-dev; the CFG scale for FLUX.2 klein and Chroma."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, tooltip="Image i uses seed + i."),
            ],
            outputs=[FLUX_DATASET.Output("dataset", tooltip="Connect to Flux LoRA Train's 'regularization' input."),
                     io.Image.Output("preview")],
        )

    @classmethod
    def execute(cls, model, clip, vae, prompt, count, width, height, steps, guidance, seed) -> io.NodeOutput:
        flux_info(model)
        check_clip(clip, model)
        check_vae(vae, model)
        settings = SampleSettings((prompt,), width, height, steps, guidance, seed)
        dataset = class_images(model, clip, vae, prompt, count, settings,
                               os.path.join(folder_paths.get_user_directory(), "fluxlora_cache"))
        grid = preview_grid(dataset)
        return io.NodeOutput(dataset, grid, ui=ui.PreviewImage(grid, cls=cls))
