"""Class images for prior preservation, rendered once by the base model with ComfyUI's sampler and kept on disk (the
same prompt, model and settings give the same images, so a second run reads them back instead of sampling again)."""
import hashlib
import io
import json
import logging
import os

import numpy as np
import torch
from PIL import Image

from .checkpoint import model_identity
from .dataset import DatasetImage, FluxDataset
from .files import write_replacing
from .images import to_pil
from .sampling import PromptSet, SampleSettings, render


def class_images(model, clip, vae, prompt: str, count: int, settings: SampleSettings, cache_root: str) -> FluxDataset:
    """``count`` images of ``prompt`` (seeds settings.seed, +1, ...), each captioned with the prompt."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise ValueError("Class images need a prompt describing the class, e.g. 'a photo of a woman'.")
    key = hashlib.sha256(json.dumps([model_identity(model), prompt, count, settings.width, settings.height,
                                     settings.steps, settings.guidance, settings.seed]).encode()).hexdigest()[:24]
    folder = os.path.join(cache_root, "class_images", key)
    files = [os.path.join(folder, f"{i:04d}.png") for i in range(count)]
    cached = [_read_cached(f) for f in files]
    missing = [i for i, entry in enumerate(cached) if entry is None]
    damaged = [i for i in missing if os.path.lexists(files[i])]
    if missing:
        os.makedirs(folder, exist_ok=True)
        images = render(model, vae, PromptSet(clip, settings), seeds=[settings.seed + i for i in missing])
        for i, image in zip(missing, images):
            buffer = io.BytesIO()
            to_pil(image).save(buffer, format="PNG")
            write_replacing(files[i], buffer.getvalue())
            cached[i] = _decoded(buffer.getvalue())
    items = [DatasetImage(os.path.basename(path), hashlib.sha256(data).hexdigest(), pixels, prompt, "class")
             for path, (data, pixels) in zip(files, cached)]
    notes = f"{len(missing)} rendered now, {count - len(missing)} from disk"
    if damaged:
        notes += f" ({len(damaged)} damaged on disk and rendered again)"
    return FluxDataset(folder=folder, resolution=max(settings.width, settings.height), crop="as given",
                       images=tuple(items), notes=(notes,))


def _decoded(data: bytes) -> tuple:
    """(bytes, (H, W, 3) uint8 pixels) of a PNG, decoded completely (a truncated file fails here, not later)."""
    with Image.open(io.BytesIO(data)) as image:
        return data, torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())


def _read_cached(path: str):
    """A cached class image as (bytes, pixels), or None when it is missing or damaged (unreadable, truncated, not an
    image). It is a cache: a damaged entry is rendered again, as the encoding cache recomputes its own, and logged."""
    if not os.path.lexists(path):
        return None
    try:
        with open(path, "rb") as f:
            return _decoded(f.read())
    except Exception as e:   # OSError, PIL's errors for truncated or unknown data, decompression bombs
        logging.warning(f"Flux LoRA Class Images: cached class image {path} is damaged ({type(e).__name__}: {e}); "
                        "rendering it again")
        return None
