"""Optimizers and learning-rate schedules (library implementations only)."""
import torch

OPTIMIZERS = ("adamw", "adamw8bit", "adafactor", "prodigy")
SCHEDULERS = ("constant", "cosine", "linear")
_SCHEDULER_NAMES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def make_optimizer(name: str, params, lr: float, weight_decay: float = 1e-4, d_coef: float = 1.0, fused: bool = False):
    """``fused``: AdamW's single-kernel update (PyTorch's ``fused=True``, one launch for all LoRA tensors instead of
    several per tensor); the trainer turns it on where the parameters live on a GPU. Same update up to rounding."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except Exception as e:  # ImportError, or a broken CUDA setup raising at import
            raise RuntimeError(f"optimizer 'adamw8bit' needs the bitsandbytes package ({e}). "
                               "Install it with 'pip install bitsandbytes' or choose 'adamw'.") from e
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor
        # fixed learning rate (the FluxGym / kohya low-VRAM preset), no relative-step magic
        return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False,
                         weight_decay=weight_decay)
    if name == "prodigy":
        from prodigyopt import Prodigy
        # the usual FLUX settings: bias correction and safeguarded warmup on
        return Prodigy(params, lr=lr, weight_decay=weight_decay, d_coef=d_coef, use_bias_correction=True,
                       safeguard_warmup=True)
    raise ValueError(f"Unknown optimizer '{name}'; choose one of {OPTIMIZERS}.")


def make_scheduler(name: str, optimizer, warmup_steps: int, total_steps: int):
    """transformers' schedule of that name; 'constant' is constant after a linear warmup."""
    if name not in _SCHEDULER_NAMES:
        raise ValueError(f"Unknown learning-rate schedule '{name}'; choose one of {SCHEDULERS}.")
    from transformers import get_scheduler
    return get_scheduler(_SCHEDULER_NAMES[name], optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=total_steps)
