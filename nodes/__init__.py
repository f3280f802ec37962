"""ComfyUI node adapters: schema + translation into trainer/ calls, nothing more."""
from comfy_api.latest import ComfyExtension, io

from .caption import AutoCaption
from .dataset import DatasetLoader
from .sampler import TestSampler
from .save import SaveLoRA
from .train import FluxLoRATrain
from .trigger import TriggerWord


class FluxLoRAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [DatasetLoader, AutoCaption, TriggerWord, FluxLoRATrain, SaveLoRA, TestSampler]
