"""On-disk cache of VAE latents and text embeddings, so a second run on the same data skips the encoders.

An entry's key covers everything its value depends on: the image's file hash and its bucket/crop/resolution
(or the caption text) and a fingerprint of the encoder's weights. Files are small safetensors; deleting the
folder is always safe.
"""
import hashlib
import json
import os

import torch
from safetensors.torch import load_file, save_file


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
    def __init__(self, root: str):
        self.root = root
        self.hits = 0

    def _path(self, kind, k):
        return os.path.join(self.root, kind, k[:2], f"{k}.safetensors")

    def get(self, kind: str, k: str):
        path = self._path(kind, k)
        if os.path.isfile(path):
            try:
                value = load_file(path)
                self.hits += 1
                return value
            except Exception:  # a damaged entry is recomputed, never fatal
                os.remove(path)
        return None

    def put(self, kind: str, k: str, tensors: dict):
        path = self._path(kind, k)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        save_file({n: t.detach().cpu().contiguous() for n, t in tensors.items()}, tmp)
        os.replace(tmp, path)  # atomic: readers never see half a file


class NoCache(EncodingCache):
    def __init__(self):
        super().__init__("")

    def get(self, kind, k):
        return None

    def put(self, kind, k, tensors):
        pass
