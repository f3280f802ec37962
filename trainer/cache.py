"""On-disk cache of VAE latents and text embeddings, so a second run on the same data skips the encoders.

An entry's key covers everything its value depends on: the image's file hash and its bucket/crop/resolution
(or the caption text) and a fingerprint of the encoder's weights. Files are small safetensors; deleting the
folder is always safe.
"""
import hashlib
import json
import logging
import os

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .files import write_replacing


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Cheap identity of a model's weights: names, shapes, dtypes and a sample of the bytes of a few tensors."""
    h = hashlib.sha256()
    items = list(module.state_dict().items())
    for name, t in items:
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
    for _, t in items[:: max(1, len(items) // 8)]:
        flat = t.detach().reshape(-1)[:16384].cpu().contiguous()
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()[:24]


def key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


class EncodingCache:
    """Entries are read back only if they hold the expected tensors, finite; anything else is recomputed. A cache
    that cannot be written (full disk, read-only folder) is a warning: training goes on without it."""

    def __init__(self, root: str):
        self.root = root
        self.hits = 0
        self.write_error = None

    def _path(self, kind, k):
        return os.path.join(self.root, kind, k[:2], f"{k}.safetensors")

    def get(self, kind: str, k: str, names: tuple):
        path = self._path(kind, k)
        if not os.path.isfile(path):
            return None
        try:
            value = load_file(path)
        except Exception:
            value = None
        if value is None or set(value) != set(names) or not all(torch.isfinite(t).all() for t in value.values()):
            logging.warning(f"Flux LoRA: cache entry {path} is damaged or holds something else; recomputing it")
            return None
        self.hits += 1
        return value

    def put(self, kind: str, k: str, tensors: dict):
        if self.write_error is not None:
            return
        try:
            os.makedirs(os.path.dirname(self._path(kind, k)), exist_ok=True)
            write_replacing(self._path(kind, k),
                            safetensors_bytes({n: t.detach().cpu().contiguous() for n, t in tensors.items()}))
        except OSError as e:
            self.write_error = e
            logging.warning(f"Flux LoRA: cannot write the encoding cache in {self.root} ({e}); training continues "
                            "without caching")


class NoCache(EncodingCache):
    def __init__(self):
        super().__init__("")

    def get(self, kind, k, names):
        return None

    def put(self, kind, k, tensors):
        pass
