"""An exponential moving average (EMA) of the adapter's trainable weights.

The average smooths out the last steps' noise (a small batch of 10-30 images makes every step noisy), so its LoRA is
often better than the weights of any single step; ai-toolkit (``ema_config``), SimpleTuner (``--use_ema``) and Fizgig
keep one. The update is torch.optim.swa_utils' EMA (``get_ema_multi_avg_fn``: one fused lerp over all tensors); the
decay warms up as diffusers' ``EMAModel`` does, ``min(decay, (1 + n) / (10 + n))`` after n updates, so the first
steps' weights, still close to the untrained start, do not dominate the average of a short run.

While a run has an EMA, every LoRA it gives (checkpoint files and samples, validation, the node's output) holds the
averaged weights; the trained weights themselves continue in the optimizer and in the training state.
"""
from contextlib import contextmanager

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of update number ``updates`` (0-based)."""
    return min(decay, (1 + updates) / (10 + updates))


class AdapterEMA:
    """The EMA of ``params`` (the adapter's trainable tensors), kept beside them on their device (float32 like them:
    one more copy of the LoRA, which the memory plan counts)."""

    def __init__(self, params, decay: float):
        self.params = list(params)
        self.decay = float(decay)
        self.updates = 0
        with torch.no_grad():
            self.shadow = [p.detach().clone() for p in self.params]

    def update(self):
        """After an optimizer step."""
        get_ema_multi_avg_fn(warmed_up_decay(self.decay, self.updates))(
            self.shadow, [p.detach() for p in self.params], self.updates)
        self.updates += 1

    @contextmanager
    def applied(self):
        """The averaged weights in the adapter's parameters for the ``with`` block, the trained ones back after."""
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            for p, average in zip(self.params, self.shadow):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, weights in zip(self.params, trained):
                    p.copy_(weights)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": [t.detach().cpu().clone() for t in self.shadow]}

    def load_state_dict(self, state: dict):
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"The saved EMA has {len(state['shadow'])} tensors, the adapter {len(self.shadow)}.")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        with torch.no_grad():
            for mine, saved in zip(self.shadow, state["shadow"]):
                mine.copy_(saved)
