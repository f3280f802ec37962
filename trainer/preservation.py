"""Prior preservation: keep what the model knows about the subject's class while the LoRA learns the subject.

- regularization images (DreamBooth's prior preservation, diffusers' ``prior_loss_weight``): every step also trains on
  a batch of class images, whose loss is added with a weight.
- differential output (kohya's "Differential Output Preservation"): every step the LoRA model's prediction for the
  class prompt, at the step's own noisy latents, is pulled toward the untouched model's prediction, which is computed on
  the same training clone with the adapters taken out (no second model in memory).
"""
from dataclasses import dataclass
from typing import Optional

import torch

from .predict import predict_velocity

PRESERVATION_MODES = ("off", "regularization images", "differential output")


@dataclass
class Preservation:
    mode: str
    weight: float
    class_text: Optional[tuple] = None   # (context, pooled) of the class prompt: differential output
    examples: Optional[list] = None      # encoded class images: regularization images


def differential_output_loss(patcher, lora, xt, sigmas, class_text, guidance: float) -> torch.Tensor:
    """MSE between the LoRA model's and the untouched model's velocity for the class prompt."""
    batch = xt.shape[0]
    context = class_text[0][None].expand(batch, -1, -1)
    pooled = class_text[1][None].expand(batch, -1)
    with torch.no_grad():
        lora.detach()  # the adapters out of the model: exactly the shared model's prediction
        try:
            target = predict_velocity(patcher, xt, sigmas, context, pooled, guidance)
        finally:
            lora.attach()
    prediction = predict_velocity(patcher, xt, sigmas, context, pooled, guidance)
    return ((prediction - target) ** 2).mean()
