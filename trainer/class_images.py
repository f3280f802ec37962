"""Class images for prior preservation, rendered once by the base model with ComfyUI's sampler and kept on disk (the
same prompt, model and settings give the same images, so a second run reads them back instead of sampling again)."""
import hashlib
import io
import json
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
    missing = [i for i, f in enumerate(files) if not os.path.isfile(f)]
    if missing:
        os.makedirs(folder, exist_ok=True)
        images = render(model, vae, PromptSet(clip, settings), seeds=[settings.seed + i for i in missing])
        for i, image in zip(missing, images):
            buffer = io.BytesIO()
            to_pil(image).save(buffer, format="PNG")
            write_replacing(files[i], buffer.getvalue())
    items = []
    for i, path in enumerate(files):
        data = open(path, "rb").read()
        pixels = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).copy())
        items.append(DatasetImage(os.path.basename(path), hashlib.sha256(data).hexdigest(), pixels, prompt, "class"))
    return FluxDataset(folder=folder, resolution=max(settings.width, settings.height), crop="as given",
                       images=tuple(items), notes=(f"{len(missing)} rendered now, {count - len(missing)} from disk",))
