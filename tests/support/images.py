"""Synthetic training photos (smooth colour fields) written as PNGs into ComfyUI's input folder."""
from pathlib import Path

import numpy as np
from PIL import Image

CAPTIONS = ["tok_test a red thing", "tok_test a blue thing", "tok_test a green thing", "tok_test a gray thing"]


def write_images(folder: Path, size=64):
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    fields = [np.stack([y, x, (y + x) / 2], -1), np.stack([1 - y, x * 0.5, y], -1),
              np.stack([x, 1 - x, y * 0.3], -1), np.stack([y * x, 1 - y, 1 - x], -1)]
    names = []
    for i, f in enumerate(fields):
        name = f"fluxlora_test_{i}.png"
        Image.fromarray((f * 255).round().astype(np.uint8)).save(folder / name)
        names.append(name)
    return names
