"""Sample images with a LoRA through ComfyUI's own sampling path (what the user will get with LoraLoader)."""
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageDraw, ImageFont

import comfy.model_sampling
import comfy.sample
import comfy.sd
import comfy.utils
import latent_preview
import node_helpers
from comfy_extras.nodes_model_advanced import ModelSamplingFlux

from .flux_model import flux_info, has_guidance_input, latent_channels, latent_downscale
from .images import to_pil, to_tensor


@dataclass(frozen=True)
class SampleSettings:
    """What TestSampler hands to FluxLoRATrain (ComfyUI type FLUX_SAMPLE_SETTINGS)."""
    prompts: tuple
    width: int = 1024
    height: int = 1024
    steps: int = 20
    guidance: float = 3.5
    seed: int = 42
    every_n_steps: int = 250
    trigger: str = ""
    # edit LoRAs: the reference images every prompt edits, each (H, W, 3) float (FLUX.1 Kontext: one; FLUX.2: several)
    reference_images: tuple = field(default=(), compare=False)

    def resolved_prompts(self, fallback_trigger: str = ""):
        """``{trigger}`` replaced by this sampler's own trigger, else by ``fallback_trigger`` (the trained dataset's)."""
        word = self.trigger or fallback_trigger
        return [p.replace("{trigger}", word) if word else p.replace("{trigger}", "").strip(" ,") for p in self.prompts]


def parse_prompts(text: str):
    prompts = tuple(line.strip() for line in (text or "").splitlines() if line.strip())
    if not prompts:
        raise ValueError("TestSampler: write at least one prompt (one per line; {trigger} is replaced by the trigger word).")
    return prompts


class PromptSet:
    """Prompts encoded once (before the text encoders leave VRAM), reused at every checkpoint. With ``references``
    (edit LoRAs: (H, W, 3) float images) every prompt edits them: each one's VAE latent joins the conditioning as a
    ReferenceLatent node adds it (chained once per image, in order), and each row of samples starts with them."""

    def __init__(self, clip, settings: SampleSettings, fallback_trigger: str = "", vae=None, references=()):
        self.settings = settings
        self.prompts = settings.resolved_prompts(fallback_trigger)
        self.references = tuple(references)
        self.positive = [clip.encode_from_tokens_scheduled(clip.tokenize(p)) for p in self.prompts]
        self.negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        for reference in self.references:   # the negative too: with real CFG (FLUX.2) only the text differs, as in
            with torch.inference_mode():     # diffusers' pipelines, whose unconditional pass sees the references
                latent = vae.encode(reference[None, :, :, :3])
            self.positive = [node_helpers.conditioning_set_values(c, {"reference_latents": [latent]}, append=True)
                             for c in self.positive]
            self.negative = node_helpers.conditioning_set_values(self.negative, {"reference_latents": [latent]},
                                                                 append=True)

    def row(self, images: torch.Tensor) -> list:
        """A checkpoint's samples as one grid row: references | samples (edit LoRAs), else the samples."""
        return [r.float().cpu() for r in self.references] + list(images)


def render(model, vae, prompt_set: PromptSet, lora_weights=None, seeds=None, strength: float = 1.0) -> torch.Tensor:
    """Euler, fixed seed: one image per prompt (or, with ``seeds``, one per seed of the first prompt), sampled the way
    each family's stock workflow samples it: FLUX.1-dev with its resolution-dependent shift and distilled guidance,
    FLUX.2-dev with distilled guidance, FLUX.2 klein and Chroma (not guidance-distilled) with CFG at ``guidance``
    against the empty prompt. ``lora_weights`` (ComfyUI LoRA keys) are applied as a normal patch at ``strength``,
    exactly like LoraLoader (strength 0: the model without them)."""
    s = prompt_set.settings
    info = flux_info(model)
    distilled = has_guidance_input(info)
    positives = [node_helpers.conditioning_set_values(p, {"guidance": s.guidance}) if distilled else p
                 for p in prompt_set.positive]
    jobs = [(p, s.seed) for p in positives] if seeds is None else [(positives[0], x) for x in seeds]
    cfg = 1.0 if distilled or info.variant == "schnell" else s.guidance
    with torch.random.fork_rng(devices=[]), torch.inference_mode():  # never disturb the training RNG stream
        if lora_weights is not None and strength != 0:
            model, _ = comfy.sd.load_lora_for_models(model, None, dict(lora_weights), strength, 0)
        if info.family == "flux1" and isinstance(model.get_model_object("model_sampling"),
                                                 comfy.model_sampling.ModelSamplingFlux):
            model = ModelSamplingFlux().patch(model, 1.15, 0.5, s.width, s.height)[0]   # FLUX.1-dev's shift
        # FLUX.1-schnell (FLOW, shift 1.0), FLUX.2 and Chroma keep the sampling their model files load with
        down = latent_downscale(model)
        latent = torch.zeros(1, latent_channels(model), s.height // down, s.width // down)
        images = []
        for positive, seed in jobs:
            images.append(vae.decode(_sample(model, seed, s.steps, cfg, positive, prompt_set.negative, latent))[:1]
                          .float().cpu())
        return torch.cat(images)


def _sample(model, seed, steps, cfg, positive, negative, latent):
    """Euler / simple from ``seed``'s noise, as the stock KSampler samples (its noise, its preview callback), through
    comfy.sample directly: the core depends on ComfyUI's internals, not on its UI module ``nodes``."""
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, latent, denoise=1.0,
                               callback=latent_preview.prepare_callback(model, steps),
                               disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def labelled_grid(rows, labels, max_tile: int = 384) -> torch.Tensor:
    """Stacks rows of images (each a list of (H, W, 3) or an (N, H, W, 3) batch; tiles take the size of the first
    row's last image) with a label per row: (1, H, W, 3) float."""
    h, w = rows[0][-1].shape[:2]
    scale = min(1.0, max_tile / max(h, w))
    tw, th = max(1, int(w * scale)), max(1, int(h * scale))
    label_w = 110
    n = max(len(r) for r in rows)
    canvas = Image.new("RGB", (label_w + n * tw, len(rows) * th), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    font = _font(16)
    for r, (images, label) in enumerate(zip(rows, labels)):
        draw.text((8, r * th + th // 2 - 8), label, fill=(230, 230, 230), font=font)
        for c, im in enumerate(images):
            canvas.paste(to_pil(im).resize((tw, th), Image.LANCZOS), (label_w + c * tw, r * th))
    return to_tensor(canvas)
