"""A slider run as the slider node starts it: every check first, then a few images of the target prompt rendered once
by the base model (kept on disk with the class images: the same prompt and settings never render twice), which give
the noisy latents, then the training run with the slider objective (trainer/slider.py)."""
from typing import Optional

from .class_images import class_images
from .flux_model import check_clip, check_schnell, check_vae, flux_info
from .memory_plan import plan_run
from .run import RunHooks, RunOutputs, train_run
from .sampling import SampleSettings
from .settings import TrainSettings
from .slider import SliderSpec, check_slider_settings

RENDER_STEPS = 20        # Euler steps of the target prompt's images
RENDER_GUIDANCE = 3.5    # FLUX.1-dev's distilled guidance; the CFG scale for klein / Chroma


def train_slider(model, clip, vae, spec: SliderSpec, settings: TrainSettings, *, images: int = 4,
                 resolution: int = 512, sample_settings: Optional[SampleSettings] = None,
                 hooks: Optional[RunHooks] = None, cache_root: str, runs_root: Optional[str] = None) -> RunOutputs:
    """Trains a slider LoRA on ``model`` from ``spec``'s prompts; ``images`` of the target prompt at ``resolution``
    px (square) give the noisy latents."""
    spec.check()
    check_slider_settings(settings)
    check_schnell(flux_info(model), settings)
    check_clip(clip, model)
    check_vae(vae, model)
    plan_run(model, settings, (resolution // 16) ** 2)   # refuses a run that cannot fit before anything is rendered
    render = SampleSettings((spec.target,), resolution, resolution, RENDER_STEPS, RENDER_GUIDANCE, settings.seed)
    dataset = class_images(model, clip, vae, spec.target, images, render, cache_root)
    return train_run(model, clip, vae, dataset, settings, sample_settings=sample_settings, hooks=hooks,
                     cache_root=cache_root, runs_root=runs_root, slider=spec)
