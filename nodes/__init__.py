"""ComfyUI node adapters: each declares its schema and translates between ComfyUI types and trainer/ calls."""
import os

import folder_paths
from comfy_api.latest import ComfyExtension, io

from .advanced import AdvancedSettings
from .caption import AutoCaption
from .class_images import ClassImages
from .compare import CompareCheckpoints
from .dataset import DatasetLoader
from .images import ImageDataset
from .live import register_routes
from .sampler import TestSampler
from .slider import FluxLoRASliderTrain
from .save import SaveLoRA
from .train import FluxLoRATrain
from .trigger import TriggerWord


class FluxLoRAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        # ComfyUI calls this once when it loads the pack (v0.8.0 never calls on_load): register what the nodes need
        if "captioners" not in folder_paths.folder_names_and_paths:  # models/captioners/<model folder>
            folder_paths.folder_names_and_paths["captioners"] = ([os.path.join(folder_paths.models_dir, "captioners")], set())
        register_routes()
        return [DatasetLoader, ImageDataset, AutoCaption, TriggerWord, FluxLoRATrain, AdvancedSettings, SaveLoRA,
                TestSampler, ClassImages, FluxLoRASliderTrain, CompareCheckpoints]
