"""What a diverging run keeps. Steps whose loss is not finite are skipped, but the update that came before them may
already have moved the weights so far that the model's output overflows: the weights after the last step with a
finite loss are finite themselves, yet can be a LoRA that samples black images. So the weights from before each
optimizer step are kept aside, and a LoRA is named as kept only after one forward of the MODEL with it, applied as
LoraLoader applies it, gave a finite prediction."""
import torch

import comfy.model_management as mm
import comfy.sd

from .predict import predict_velocity
from .vram import release

CHECK_GUIDANCE = 3.5   # the distilled guidance Test Sampler and FLUX.1-dev workflows sample with (ignored without one)
CHECK_SEED = 0


class WeightsBefore:
    """The trainable tensors as they were before the latest optimizer step, in CPU memory (pinned next to a GPU: the
    copy then runs behind the step instead of waiting for it, and the update, queued after it on the same stream,
    cannot overtake it). Costs the LoRA's size in RAM, no VRAM."""

    def __init__(self, params: list):
        self.params = params
        self.copies = None
        self.step = None   # optimizer steps the copied weights had (None: nothing copied yet)

    def take(self, step: int):
        if self.copies is None:
            pin = any(p.is_cuda for p in self.params)
            self.copies = [torch.empty(p.shape, dtype=p.dtype, pin_memory=pin) for p in self.params]
        for copy, p in zip(self.copies, self.params):
            copy.copy_(p.detach(), non_blocking=True)
        self.step = step

    def restore(self):
        with torch.no_grad():
            for p, copy in zip(self.params, self.copies):
                p.copy_(copy)


def finite_prediction(model, weights: dict, example) -> bool:
    """Whether ``model`` (a ComfyUI MODEL) with ``weights`` (a LoRA, ComfyUI or kohya keys) applied as a normal ComfyUI
    patch predicts finite values for ``example``'s caption (and edit references) from pure noise, where sampling
    starts: one forward. The shared weights are put back afterwards."""
    patched, _ = comfy.sd.load_lora_for_models(model, None, weights, 1.0, 0)
    noise = torch.randn((1, *example.latent.shape), generator=torch.Generator().manual_seed(CHECK_SEED))
    references = [r[None] for r in example.references]
    try:
        with torch.no_grad():
            mm.load_models_gpu([patched])
            velocity = predict_velocity(patched, noise.to(patched.load_device), torch.ones(1), example.context[None],
                                        example.pooled[None], CHECK_GUIDANCE, references)
        return bool(torch.isfinite(velocity).all())
    finally:
        release(patched)   # ComfyUI patched the shared weights in place for this clone
