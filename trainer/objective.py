"""The FLUX.1 rectified-flow objective.

x_t = (1 - sigma) * x0 + sigma * noise; the model predicts the velocity, target = noise - x0; the loss
is a per-sample MSE over the latent, optionally weighted per sigma, averaged over the batch.
"""
import math

import torch

from comfy.model_sampling import flux_time_shift

SIGMA_SAMPLERS = ("sigmoid", "shift", "flux_shift", "uniform")
LOSS_WEIGHTINGS = ("none", "sigma_sqrt", "cosmap")
DEFAULT_SHIFT = 3.1582  # = exp(1.15), FLUX.1's shift at 1024x1024 (kohya's recommended discrete_flow_shift)


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Timestep shift s*t / (1 + (s-1)*t), i.e. ComfyUI's flux_time_shift with mu = ln(s): moves samples towards
    high noise for s > 1 (the same shift ComfyUI samples FLUX with)."""
    return flux_time_shift(math.log(shift), 1.0, sigmas)


def flux_resolution_shift(image_tokens: int, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """FLUX.1's resolution-dependent shift exp(mu), mu linear in the packed token count (256 -> 0.5, 4096 -> 1.15),
    as ComfyUI's ModelSamplingFlux node computes it."""
    mu = base_shift + (image_tokens - 256) * (max_shift - base_shift) / (4096 - 256)
    return math.exp(mu)


def sample_sigmas(method: str, batch: int, generator: torch.Generator, *, shift: float = DEFAULT_SHIFT,
                  image_tokens: int = 4096) -> torch.Tensor:
    """Draws one sigma in (0, 1) per sample (float32, CPU, from ``generator``).

    sigmoid      sigmoid(N(0, 1))                                  ai-toolkit / x-flux default; = SD3's logit-normal(0, 1)
    shift        sigmoid(N(0, 1)), then shifted by ``shift``        kohya 'shift', FluxGym
    flux_shift   sigmoid(N(0, 1)), then shifted by exp(mu(tokens))  kohya 'flux_shift' (resolution dependent)
    uniform      U(0, 1)
    """
    if method == "uniform":
        return torch.rand(batch, generator=generator)
    sigmas = torch.sigmoid(torch.randn(batch, generator=generator))
    if method == "sigmoid":
        return sigmas
    if method == "shift":
        return shift_sigmas(sigmas, shift)
    if method == "flux_shift":
        return shift_sigmas(sigmas, flux_resolution_shift(image_tokens))
    raise ValueError(f"Unknown sigma sampling '{method}'; choose one of {SIGMA_SAMPLERS}.")


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    s = sigmas.reshape(-1, *([1] * (x0.ndim - 1))).to(x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def loss_weights(method: str, sigmas: torch.Tensor) -> torch.Tensor:
    """SD3-style per-sample loss weights (diffusers' ``compute_loss_weighting_for_sd3``)."""
    if method == "none":
        return torch.ones_like(sigmas)
    if method == "sigma_sqrt":
        return sigmas.clamp(min=1e-3) ** -2.0
    if method == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigmas + 2 * sigmas ** 2))
    raise ValueError(f"Unknown loss weighting '{method}'; choose one of {LOSS_WEIGHTINGS}.")


def flow_matching_loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    per_sample = ((prediction.float() - target.float()) ** 2).reshape(prediction.shape[0], -1).mean(dim=1)
    return (per_sample * weights.to(per_sample)).mean()
