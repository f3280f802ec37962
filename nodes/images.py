"""Flux LoRA Dataset from Images node: an IMAGE batch + captions as a training dataset."""
from comfy_api.latest import io, ui

from ..trainer.dataset import dataset_from_images, report, split_captions
from .types import FLUX_DATASET


class ImageDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_ImageDataset",
            display_name="Flux LoRA Dataset from Images",
            category="FluxLoRA",
            description="Turns an IMAGE batch (e.g. Load Image -> Image Batch) and its captions into a training "
                        "dataset for Flux LoRA Train. For a folder of photos use Dataset Loader instead.",
            inputs=[
                io.Image.Input("images", tooltip="All one size; sides are center-cropped to multiples of 16."),
                io.String.Input("captions", multiline=True, default="",
                                tooltip="One caption per line, in image order; or a single line for every image. "
                                        "Include your trigger word."),
            ],
            outputs=[FLUX_DATASET.Output("dataset", tooltip="Connect to Trigger Word or Flux LoRA Train.")],
        )

    @classmethod
    def execute(cls, images, captions) -> io.NodeOutput:
        dataset = dataset_from_images(images, split_captions(captions, images.shape[0]))
        return io.NodeOutput(dataset, ui=ui.PreviewText(report(dataset)))
