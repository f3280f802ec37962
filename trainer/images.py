"""Image tensors <-> PIL images (ComfyUI IMAGE layout: (H, W, 3), uint8 or float in [0, 1])."""
import numpy as np
import torch
from PIL import Image


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """An (H, W, 3) tensor, or a batch of one (1, H, W, 3), as a PIL RGB image."""
    if pixels.ndim == 4:
        pixels = pixels[0]
    if pixels.dtype != torch.uint8:
        pixels = (pixels.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels.cpu().numpy()))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as a ComfyUI IMAGE batch of one: (1, H, W, 3) float in [0, 1]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]
