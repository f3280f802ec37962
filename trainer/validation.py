"""Validation loss on held-out images and early stopping.

The validation loss uses fixed noise and a fixed, stratified set of noise levels for each held-out image, so two
evaluations differ only because the LoRA changed (the training loss draws new noise and noise levels every step and
is far noisier). It is the plain velocity MSE, whatever the training's loss weighting.
"""
from dataclasses import dataclass

import torch

from . import objective
from .predict import predict_velocity

LEVELS = 4  # noise levels per image: the middles of 4 equal bands of (0, 1)
VALIDATION_SEED_OFFSET = 7919  # the validation noise differs from the training noise of the same seed


def split_indices(count: int, held_out: int, seed: int):
    """(training indices, validation indices): ``held_out`` images chosen by ``seed``; at least one stays in training."""
    if held_out <= 0:
        return list(range(count)), []
    if held_out >= count:
        raise ValueError(f"validation_images is {held_out} but the dataset has only {count} images: keep at least one "
                         "for training (2-3 held out of 20+ is typical).")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held_out:]), sorted(order[:held_out])


@dataclass
class ValidationSet:
    examples: list
    noise: list              # per example: (LEVELS, C, h, w), fixed
    sigmas: torch.Tensor     # (LEVELS,)

    @classmethod
    def build(cls, examples: list, seed: int):
        g = torch.Generator().manual_seed((seed + VALIDATION_SEED_OFFSET) % 2 ** 63)
        noise = [torch.randn((LEVELS, *e.latent.shape), generator=g) for e in examples]
        return cls(examples, noise, (torch.arange(LEVELS, dtype=torch.float32) + 0.5) / LEVELS)

    def loss(self, patcher, guidance: float, device) -> float:
        """Mean velocity MSE over the held-out images and noise levels (no gradients)."""
        total = torch.zeros((), device=device)
        with torch.no_grad():
            for example, noise in zip(self.examples, self.noise):
                x0 = example.latent[None].expand(LEVELS, *example.latent.shape).to(device)
                eps = noise.to(device)
                xt = objective.noisy_latents(x0, eps, self.sigmas.to(device))
                references = [r[None].expand(LEVELS, *r.shape) for r in example.references]
                pred = predict_velocity(patcher, xt, self.sigmas, example.context[None].expand(LEVELS, -1, -1),
                                        example.pooled[None].expand(LEVELS, -1), guidance, references)
                total += objective.flow_matching_loss(pred, objective.velocity_target(x0, eps), torch.ones(LEVELS))
        return float(total) / len(self.examples)


@dataclass
class EarlyStopping:
    """Tracks the best validation loss; ``update`` says whether it improved and whether to stop."""
    patience: int
    min_delta: float
    best_step: int = 0
    best_loss: float = float("inf")
    stale: int = 0

    def update(self, step: int, loss: float):
        improved = loss < self.best_loss - self.min_delta
        if improved:
            self.best_step, self.best_loss, self.stale = step, loss, 0
        else:
            self.stale += 1
        return improved, self.patience > 0 and self.stale >= self.patience
