"""A training set: images already cropped to their buckets with their captions, its report and preview. (Reading a
folder into one is trainer/folder.py.)"""
import hashlib
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from PIL import Image

T5_MAX_TOKENS = 512  # the longest T5 sequence FLUX.1-dev was trained with


@dataclass(frozen=True)
class DatasetImage:
    name: str             # file name relative to the folder
    sha256: str           # of the file's bytes (of the pixels for images that came as an IMAGE batch)
    pixels: torch.Tensor  # (H, W, 3) uint8, already cropped/resized to the bucket
    caption: str = ""
    caption_source: str = "none"  # none | file | auto | file+auto | input (Dataset from Images) | class
    # edit pairs: the reference ("before") images, each (H, W, 3) uint8 at the image's size, in order (FLUX.1 Kontext:
    # usually one; FLUX.2: one or more), and the sha256 of each one's file
    controls: tuple = ()
    control_sha256s: tuple = ()

    @property
    def bucket(self):
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])  # (width, height)


def is_paired(dataset) -> bool:
    """Whether the dataset holds edit pairs (every image has its reference images)."""
    return bool(dataset.images) and all(im.controls for im in dataset.images)


def reference_count(dataset) -> int:
    """References per image of an edit dataset (0 for plain images)."""
    return max((len(im.controls) for im in dataset.images), default=0)


def control_labels(count: int) -> list:
    """How the fingerprint and the cache keys name each reference: the first as a one-reference pair always did."""
    return ["control"] + [f"control{i}" for i in range(2, count + 1)]


@dataclass(frozen=True)
class DatasetInfo:
    """What a trained LoRA records about its data (file metadata, run record)."""
    folder: str
    fingerprint: str
    trigger: str
    crop: str
    resolution: int
    images: int


@dataclass(frozen=True)
class FluxDataset:
    """What DatasetLoader hands on (ComfyUI type FLUX_DATASET). Immutable: nodes derive new datasets."""
    folder: str
    resolution: int
    crop: str
    images: tuple
    problems: tuple = ()
    warnings: tuple = ()
    trigger: str = ""
    notes: tuple = field(default=())
    caption_extension: str = ".txt"

    def with_images(self, images, **changes):
        return replace(self, images=tuple(images), **changes)

    def fingerprint(self) -> str:
        """Identifies the training data: image contents, captions, crop, resolution."""
        h = hashlib.sha256(f"{self.resolution}|{self.crop}".encode())
        for im in self.images:
            h.update(f"|{im.sha256}|{im.bucket}|{im.caption}".encode())
            for label, digest in zip(control_labels(len(im.control_sha256s)), im.control_sha256s):
                h.update(f"|{label} {digest}".encode())
        return h.hexdigest()

    def describe(self) -> DatasetInfo:
        return DatasetInfo(folder=self.folder, fingerprint=self.fingerprint(), trigger=self.trigger, crop=self.crop,
                           resolution=self.resolution, images=len(self.images))


def split_captions(text: str, count: int):
    """One caption per line for ``count`` images; a single line is used for every image."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(lines) == 1:
        return lines * count
    if len(lines) != count:
        raise ValueError(f"Got {count} images but {len(lines)} caption lines. Write one caption per line "
                         "(in image order), or a single line to use for every image.")
    return lines


def caption_suffix(extension: str) -> str:
    """'.txt' for 'txt' or '.txt': the suffix of a caption file next to its image."""
    extension = (extension or "").strip()
    return extension if extension.startswith(".") else "." + extension


def dataset_from_images(images: torch.Tensor, captions: list) -> FluxDataset:
    """An IMAGE batch (B, H, W, C floats in [0, 1], all one size) with one caption per image as a dataset. Sides are
    center-cropped to multiples of 16 (8x VAE downscale x 2x2 FLUX patches)."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError("The images input is empty.")
    if not torch.isfinite(images).all():
        raise ValueError("The images input holds NaN or infinite pixel values; check the node that made it.")
    if len(captions) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(captions)} captions.")
    h, w = images.shape[1], images.shape[2]
    nh, nw = h - h % 16, w - w % 16
    if nh == 0 or nw == 0:
        raise ValueError(f"Images of {w}x{h} pixels are too small to train on (need at least 16x16).")
    top, left = (h - nh) // 2, (w - nw) // 2
    pixels = (images[:, top:top + nh, left:left + nw, :3].float().clamp(0, 1) * 255).round().to(torch.uint8)
    items = [DatasetImage(f"image {i + 1}", hashlib.sha256(p.contiguous().numpy().tobytes()).hexdigest(), p, c,
                          "input" if c else "none") for i, (p, c) in enumerate(zip(pixels, captions))]
    return FluxDataset(folder="", resolution=max(nw, nh), crop="as given", images=tuple(items))


def long_caption_warnings(dataset: FluxDataset) -> list:
    """Captions longer than FLUX.1's 512 T5 tokens (ComfyUI's T5 tokenizer; the trainer cuts them to 512)."""
    from .trigger import t5_token_counts
    counts = t5_token_counts([im.caption for im in dataset.images])
    long = sorted(((n, im.name) for n, im in zip(counts, dataset.images) if n > T5_MAX_TOKENS), reverse=True)
    if not long:
        return []
    return [f"{len(long)} caption(s) are longer than the {T5_MAX_TOKENS} T5 tokens FLUX.1 was trained with (longest: "
            f"{long[0][1]}, {long[0][0]} tokens); training cuts them to {T5_MAX_TOKENS} tokens - shorten them"]


def report(dataset: FluxDataset) -> str:
    buckets = {}
    for im in dataset.images:
        buckets[im.bucket] = buckets.get(im.bucket, 0) + 1
    captioned = sum(1 for im in dataset.images if im.caption)
    pairs = sum(1 for im in dataset.images if im.controls)
    references = reference_count(dataset)
    lines = [f"{len(dataset.images)} images from {dataset.folder or 'the images input'}"
             + (f" ({pairs} edit pairs with {references} reference image{'s' if references > 1 else ''} each)"
                if pairs else ""),
             f"{captioned} captioned, {len(dataset.images) - captioned} without caption",
             f"crop: {dataset.crop}; buckets: " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(buckets.items()))]
    if dataset.trigger:
        lines.append(f"trigger word: {dataset.trigger}")
    lines += [f"WARNING: {w}" for w in dataset.warnings + tuple(long_caption_warnings(dataset))]
    lines += [f"problem: {p}" for p in dataset.problems]
    lines += [f"note: {n}" for n in dataset.notes]
    return "\n".join(lines)


def preview_grid(dataset: FluxDataset, tile: int = 256, columns: int = 6) -> torch.Tensor:
    """(1, H, W, 3) float grid of what will be trained on (after crop/resize), aspect kept inside each tile."""
    n = len(dataset.images)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    canvas = Image.new("RGB", (cols * tile, rows * tile), (32, 32, 32))
    for i, im in enumerate(dataset.images):
        thumb = Image.fromarray(im.pixels.numpy())
        thumb.thumbnail((tile - 8, tile - 8), Image.LANCZOS)
        x, y = (i % cols) * tile + (tile - thumb.width) // 2, (i // cols) * tile + (tile - thumb.height) // 2
        canvas.paste(thumb, (x, y))
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]
