"""Slider LoRAs (concept sliders): a LoRA that, at strength +1, moves the model's prediction for a target prompt toward
a positive prompt and away from a negative one, and at strength -1 the other way ("old <-> young", "more <-> less
detail"). Trained from prompts alone; the LoRA file is a normal one and the slider is LoraLoader's ``strength_model``.

The objective is ai-toolkit's concept-slider loss (``ConceptSliderTrainer.get_guided_loss``), without anchors: the base
model's predictions for the positive, target ("neutral") and negative prompt at the step's noisy latent give the
direction ``d = positive - negative``; the goal at multiplier m is ``neutral + m * guidance_strength * d``, rescaled to
the neutral prediction's mean and standard deviation; the LoRA model, applied at m = +1 and at m = -1, is pulled to
it. ai-toolkit averages an 'enhance' and an 'erase' term per polarity whose goals coincide without anchors, and an
anchor term that is zero without anchors: (2 * MSE + 0) / 3 per polarity, summed over both polarities, as here.

The base predictions come from the same training copy with the adapters taken out (as differential output
preservation does: no second model). The noisy latents are drawn as for any training step, from a few images of the
target prompt that the base model renders once (no dataset needed)."""
from dataclasses import dataclass
from typing import Optional

import torch

from .predict import predict_velocity

DEFAULT_GUIDANCE_STRENGTH = 3.0   # ai-toolkit's ConceptSliderTrainerConfig default
STRENGTHS = (-1.0, 0.0, 1.0)      # the checkpoint samples' strip


@dataclass
class SliderPrompts:
    """The encoded prompts, each (context, pooled) as encoder.text gives them, and the strength of the push."""
    target: tuple
    positive: tuple
    negative: tuple
    guidance_strength: float = DEFAULT_GUIDANCE_STRENGTH
    described: Optional[dict] = None   # the prompts as text (the file's metadata)


def norm_like(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``tensor`` shifted and scaled to ``like``'s mean and standard deviation (over all elements)."""
    return (tensor - tensor.mean()) / (tensor.std() + 1e-8) * like.std() + like.mean()


def slider_goals(neutral, positive, negative, guidance_strength: float) -> dict:
    """{multiplier: goal} for multipliers +1 and -1."""
    direction = positive - negative
    return {m: norm_like(neutral + m * guidance_strength * direction, neutral) for m in (1.0, -1.0)}


def _expanded(text, batch):
    return text[0][None].expand(batch, -1, -1), text[1][None].expand(batch, -1)


def slider_loss(patcher, lora, xt, sigmas, prompts: SliderPrompts, guidance: float, backward: float = 0.0):
    """The slider loss at noisy latents ``xt`` / ``sigmas``. With ``backward`` > 0 the gradient of ``backward`` x the
    loss is accumulated polarity by polarity (one graph in memory at a time, as ai-toolkit does) and the loss returned
    detached; otherwise it is returned with its graph."""
    batch = xt.shape[0]
    with torch.no_grad():
        lora.detach()   # the adapters out of the model: the base model's predictions
        try:
            neutral, positive, negative = (predict_velocity(patcher, xt, sigmas, *_expanded(text, batch), guidance)
                                           for text in (prompts.target, prompts.positive, prompts.negative))
        finally:
            lora.attach()
    goals = slider_goals(neutral, positive, negative, prompts.guidance_strength)
    total = None
    for multiplier, goal in goals.items():
        with lora.multiplier(multiplier):
            prediction = predict_velocity(patcher, xt, sigmas, *_expanded(prompts.target, batch), guidance)
            loss = 2.0 * ((prediction - goal) ** 2).mean() / 3.0
            if backward > 0:
                (backward * loss).backward()
                loss = loss.detach()
        total = loss if total is None else total + loss
    return total


@dataclass(frozen=True)
class SliderSpec:
    """What the slider node asks for, as text (encoded by the run with the model's own text encoder)."""
    target: str
    positive: str
    negative: str
    guidance_strength: float = DEFAULT_GUIDANCE_STRENGTH

    def check(self):
        empty = [name for name in ("target", "positive", "negative") if not getattr(self, name).strip()]
        if empty:
            raise ValueError(f"A slider needs a target, a positive and a negative prompt; {', '.join(empty)} is empty.")
        if self.positive.strip() == self.negative.strip():
            raise ValueError("The positive and the negative prompt are the same: the slider would have no direction. "
                             "Describe the two ends, e.g. 'a photo of an old person' / 'a photo of a young person'.")

    def as_dict(self) -> dict:
        return {"target": self.target, "positive": self.positive, "negative": self.negative,
                "guidance_strength": self.guidance_strength}


# settings a slider run has no use for, with the value that means "off" (anything else is refused before any work)
NOT_FOR_SLIDERS = {"caption_dropout": 0.0, "validation_images": 0, "output_lora": "last step", "preservation": "off",
                   "reference_dropout": 0.0, "use_dora": False, "init": "default"}


def check_slider_settings(settings):
    """Refuses settings that would do nothing (or the wrong thing) in a slider run: its loss has no captions to drop,
    no held-out images to validate on, no class to preserve; DoRA and the base-moving inits are not linear in the
    LoRA's strength, which a slider must be."""
    wrong = [f"{name} {getattr(settings, name)!r} (set {off!r})" for name, off in NOT_FOR_SLIDERS.items()
             if getattr(settings, name) != off]
    if wrong:
        raise ValueError("Slider training does not use these settings: " + "; ".join(wrong) + ". A slider learns from "
                         "the three prompts alone: it has no captions, held-out images or class to preserve, and its "
                         "strength must act linearly (no DoRA, init 'default').")
