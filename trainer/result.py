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
    run: str = ""                # the run folder's name ("" without checkpoints)
    steps_done: int = 0          # optimizer steps done (skipped non-finite steps included)
    final_loss: Optional[float] = None  # mean of the last 10 finite steps' losses
    skipped_steps: int = 0       # steps skipped because the loss or gradients were not finite
    validation: tuple = ()       # (step, validation loss) pairs
    best_step: Optional[int] = None      # the step with the lowest validation loss
    stopped_early: bool = False
    resumed_at: Optional[int] = None     # the step this run was resumed from
    init_seconds: Optional[float] = None # time the LoRA-GA / PiSSA / OLoRA initialisation took
    base_weights: str = "as loaded"      # the frozen weights trained against: 'as loaded', 'fp8' or 'nf4'
    slider: Optional[dict] = None        # a slider LoRA: its prompts and guidance strength
    ema: bool = False                    # the weights are the EMA of the trained ones (settings.ema_decay)

    @property
    def trigger(self) -> str:
        return self.dataset.trigger if self.dataset is not None else ""

    def after(self, steps_done: int, losses, skipped: int = 0, validation=(), best_step=None,
              stopped_early: bool = False) -> "RunInfo":
        tail = losses[-10:]
        return replace(self, steps_done=steps_done, final_loss=sum(tail) / len(tail) if tail else None,
                       skipped_steps=skipped, validation=tuple(tuple(v) for v in validation), best_step=best_step,
                       stopped_early=stopped_early)


class TrainedLoRA(dict):
    """ComfyUI-native LoRA weights (``diffusion_model.<layer>.lora_up.weight`` ...), usable wherever ComfyUI
    expects a ``LORA_MODEL`` (e.g. the stock 'Load LoRA Model' node), plus ``info`` (a :class:`RunInfo`), and the
    loss and learning rate of every step."""

    def __init__(self, weights: dict, info: RunInfo, losses=(), learning_rates=()):
        super().__init__(weights)
        self.info = info
        self.losses = list(losses)
        self.learning_rates = list(learning_rates)
