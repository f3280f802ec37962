"""What a training run hands to the nodes: the LoRA weights and a typed record of how they were trained."""
from dataclasses import dataclass, replace
from typing import Optional

from .dataset import DatasetInfo
from .flux_model import FluxInfo
from .settings import TrainSettings


@dataclass(frozen=True)
class RunInfo:
    settings: TrainSettings
    preset: str                  # the preset the settings started from ("" when built in code)
    model: FluxInfo
    dataset: Optional[DatasetInfo]
    examples: int                # training images
    pixel_size: tuple            # (width, height) of the largest training image
    steps_done: int = 0
    final_loss: Optional[float] = None  # mean of the last 10 steps' losses

    @property
    def trigger(self) -> str:
        return self.dataset.trigger if self.dataset is not None else ""

    def after(self, losses) -> "RunInfo":
        tail = losses[-10:]
        return replace(self, steps_done=len(losses), final_loss=sum(tail) / len(tail) if tail else None)


class TrainedLoRA(dict):
    """ComfyUI-native LoRA weights (``diffusion_model.<layer>.lora_up.weight`` ...), usable wherever ComfyUI
    expects a ``LORA_MODEL`` (e.g. the stock 'Load LoRA Model' node), plus ``info`` (a :class:`RunInfo`), and the
    loss and learning rate of every step."""

    def __init__(self, weights: dict, info: RunInfo, losses=(), learning_rates=()):
        super().__init__(weights)
        self.info = info
        self.losses = list(losses)
        self.learning_rates = list(learning_rates)
