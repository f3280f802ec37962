"""DatasetLoader node: a folder of photos -> FLUX_DATASET, a preview grid and a report."""
import os

import folder_paths
from comfy_api.latest import io, ui

from ..trainer.comfy_features import dataset_roots, server_is_local
from ..trainer.dataset import preview_grid, report
from ..trainer.folder import CROP_MODES, SMALL_IMAGE_POLICIES, load_folder, resolve_folder
from ..trainer.pairs import control_folder_names
from .types import FLUX_DATASET


def _roots():
    return [folder_paths.get_input_directory(), *dataset_roots()]


def _listing(folder):
    try:
        path = resolve_folder(folder, _roots(), server_is_local())
    except ValueError:
        return folder
    return [(e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in sorted(os.scandir(path), key=lambda e: e.name)
            if os.path.exists(e.path)]


class DatasetLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_DatasetLoader",
            display_name="Flux LoRA Dataset Loader",
            category="FluxLoRA",
            is_output_node=True,
            description="Reads a folder of training photos (png/jpg/webp) and their .txt captions. Bad files are "
                        "reported and skipped, never fatal.",
            inputs=[
                io.String.Input("folder", default="lora_dataset",
                                tooltip="The name of a folder in ComfyUI's input directory (or, on ComfyUI 0.30 and "
                                        "newer, its datasets directory), or an absolute path (only on a ComfyUI that "
                                        "does not --listen to other machines). A wrong name shows the folders there."),
                io.Combo.Input("resolution", options=["512", "768", "1024"], default="1024",
                               tooltip="Training resolution. FLUX.1-dev trains best at 1024."),
                io.Combo.Input("crop", options=list(CROP_MODES), default=CROP_MODES[0],
                               tooltip="center square 1:1: resize + center crop to resolution x resolution. aspect buckets: "
                                       "keep each photo's aspect (sides in steps of 64, about resolution^2 pixels, "
                                       "downscaled only)."),
                io.String.Input("caption_extension", default=".txt",
                                tooltip="Caption files share the image's name with this extension (photo1.png -> photo1.txt)."),
                io.Combo.Input("small_images", options=list(SMALL_IMAGE_POLICIES), default="skip",
                               tooltip="Images smaller than the resolution: skip them, or include them (square mode "
                                       "upscales them; bucket mode keeps them at their own size)."),
                io.String.Input("control_folder", default="", optional=True,
                                tooltip="Edit LoRAs (FLUX.1 Kontext, FLUX.2): a folder of reference ('before') "
                                        "images, each named like its target image in 'folder' (001.png <-> 001.jpg); "
                                        "several references: one folder each, comma separated, in order. Captions "
                                        "are the edit instructions. Empty: no pairs, unless the folder holds "
                                        "name_control.* (or name_control_1.*, name_control_2.*, ...) files next to "
                                        "name.* (then those are the pairs). Found like 'folder'."),
            ],
            outputs=[
                FLUX_DATASET.Output("dataset", tooltip="Connect to AutoCaption, TriggerWord or Flux LoRA Train."),
                io.Image.Output("preview", tooltip="What will actually be trained on, after crop and resize."),
                io.String.Output("report", tooltip="Counts, buckets, warnings and every problem file."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, folder, control_folder="", **kwargs):
        # re-read when the folders' files change, even if the inputs did not
        return [_listing(folder), [_listing(name) for name in control_folder_names(control_folder)]]

    @classmethod
    def execute(cls, folder, resolution, crop, caption_extension, small_images, control_folder="") -> io.NodeOutput:
        dataset = load_folder(folder, _roots(), int(resolution), crop, caption_extension, small_images,
                              allow_outside=server_is_local(), control_folder=control_folder)
        text = report(dataset)
        grid = preview_grid(dataset)
        return io.NodeOutput(dataset, grid, text, ui=ui.PreviewText(text))
