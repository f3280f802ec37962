"""A training set from a folder of photos: read safely, crop/resize to buckets, pair captions, report problems."""
import hashlib
import io
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
CROP_MODES = ("center square 1:1", "aspect buckets")
SMALL_IMAGE_POLICIES = ("skip", "include")
BUCKET_STEP = 64


@dataclass(frozen=True)
class DatasetImage:
    name: str             # file name relative to the folder
    sha256: str           # of the file's bytes (of the pixels for images that came as an IMAGE batch)
    pixels: torch.Tensor  # (H, W, 3) uint8, already cropped/resized to the bucket
    caption: str = ""
    caption_source: str = "none"  # none | file | auto | file+auto | input

    @property
    def bucket(self):
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])  # (width, height)


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


def dataset_from_images(images: torch.Tensor, captions: list) -> FluxDataset:
    """An IMAGE batch (B, H, W, C floats in [0, 1], all one size) with one caption per image as a dataset. Sides are
    center-cropped to multiples of 16 (8x VAE downscale x 2x2 FLUX patches)."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError("The images input is empty.")
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


def _subfolders(root: Path, limit: int = 12) -> list:
    try:
        names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []
    return names[:limit] + (["..."] if len(names) > limit else [])


def resolve_folder(folder: str, roots) -> Path:
    """An absolute folder, or a folder name looked up in ``roots`` in order (ComfyUI's input directory, then its
    datasets folders where that ComfyUI has them). A missing folder is an error that lists what each root holds."""
    roots = [Path(r) for r in ([roots] if isinstance(roots, (str, Path)) else roots) if r]
    where = " or ".join(str(r) for r in roots) or "(no folders configured)"
    text = (folder or "").strip().strip('"')
    if not text:
        raise ValueError(f"DatasetLoader: no folder given. Enter an absolute path, or the name of a folder in {where}.")
    path = Path(os.path.expanduser(text))
    candidates = [path] if path.is_absolute() else [r / path for r in roots]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    listing = "; ".join(f"{r}: {', '.join(_subfolders(r)) or 'no folders'}" for r in roots)
    raise ValueError(f"DatasetLoader: the folder '{text}' does not exist (folder names are looked up in {where}). "
                     f"Folders there - {listing}.")


def caption_suffix(extension: str) -> str:
    """'.txt' for 'txt' or '.txt': the suffix of a caption file next to its image."""
    extension = (extension or "").strip()
    return extension if extension.startswith(".") else "." + extension


def bucket_size(width: int, height: int, resolution: int):
    """Largest (w, h), multiples of 64 with about resolution^2 pixels, same aspect, never above the image size."""
    scale = min(1.0, math.sqrt(resolution * resolution / (width * height)))
    bw = max(BUCKET_STEP, int(width * scale) // BUCKET_STEP * BUCKET_STEP)
    bh = max(BUCKET_STEP, int(height * scale) // BUCKET_STEP * BUCKET_STEP)
    return bw, bh


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Resizes (Lanczos) to cover width x height, then center-crops to exactly that size."""
    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    image = image.resize((w, h), Image.LANCZOS) if (w, h) != image.size else image
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


def _open_rgb(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes now: truncated or corrupt files fail here
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


def load_folder(folder: str, roots, resolution: int = 1024, crop: str = CROP_MODES[0], caption_extension: str = ".txt",
                small_images: str = "skip") -> FluxDataset:
    """Reads every image of ``folder`` (not recursive). Bad files never raise: they are reported and skipped."""
    if crop not in CROP_MODES:
        raise ValueError(f"Unknown crop mode '{crop}'; choose one of {CROP_MODES}.")
    if small_images not in SMALL_IMAGE_POLICIES:
        raise ValueError(f"Unknown small-image policy '{small_images}'; choose one of {SMALL_IMAGE_POLICIES}.")
    path = resolve_folder(folder, roots)
    ext = caption_suffix(caption_extension)
    images, problems, notes, seen = [], [], [], {}
    files = sorted(p for p in path.iterdir() if p.is_file())
    other = [p.name for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS and p.suffix.lower() != ext.lower()
             and not p.name.startswith(".")]
    if other:
        notes.append(f"ignored {len(other)} non-image file(s): {', '.join(other[:8])}{' ...' if len(other) > 8 else ''}")
    for file in (p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS):
        data = file.read_bytes()
        if not data:
            problems.append(f"{file.name}: empty file (0 bytes) - skipped")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            problems.append(f"{file.name}: duplicate of {seen[digest]} (same content) - skipped")
            continue
        try:
            image = _open_rgb(data)
        except UnidentifiedImageError:
            problems.append(f"{file.name}: not a readable image - skipped")
            continue
        except (OSError, ValueError, SyntaxError) as e:
            problems.append(f"{file.name}: corrupt or truncated image ({e}) - skipped")
            continue
        seen[digest] = file.name
        w, h = image.size
        if crop == CROP_MODES[0]:
            small = min(w, h) < resolution
            target = (resolution, resolution)
        else:
            small = w * h < resolution * resolution * 0.9
            target = bucket_size(w, h, resolution)
        if small:
            if small_images == "skip":
                problems.append(f"{file.name}: {w}x{h} is smaller than {resolution}px - skipped (set small_images to "
                                "'include' to train on it)")
                continue
            how = "upscaled" if crop == CROP_MODES[0] else f"kept at its own size {target[0]}x{target[1]}"
            problems.append(f"{file.name}: {w}x{h} is smaller than {resolution}px - included, {how}")
        caption_file = file.with_suffix(ext)
        caption = caption_file.read_text(encoding="utf-8", errors="replace").strip() if caption_file.is_file() else ""
        if not caption:
            problems.append(f"{file.name}: no caption ({caption_file.name} missing or empty)")
        pixels = torch.from_numpy(np.asarray(fit(image, *target), dtype=np.uint8).copy())
        images.append(DatasetImage(file.name, digest, pixels, caption, "file" if caption else "none"))
    if not images:
        raise ValueError(f"DatasetLoader: no usable images in '{path}' (png, jpg, jpeg, webp)."
                         + (" Problems: " + "; ".join(problems[:5]) if problems else ""))
    warnings = []
    if len(images) < 10:
        warnings.append(f"only {len(images)} images: 10-30 varied images usually train a better LoRA")
    if len(images) > 30:
        warnings.append(f"{len(images)} images: more than 30 rarely helps and makes each epoch longer")
    if resolution < 1024:
        warnings.append(f"resolution {resolution}: FLUX.1-dev is at its best trained at 1024")
    return FluxDataset(str(path), resolution, crop, tuple(images), tuple(problems), tuple(warnings), notes=tuple(notes),
                       caption_extension=ext)


def report(dataset: FluxDataset) -> str:
    buckets = {}
    for im in dataset.images:
        buckets[im.bucket] = buckets.get(im.bucket, 0) + 1
    captioned = sum(1 for im in dataset.images if im.caption)
    lines = [f"{len(dataset.images)} images from {dataset.folder or 'the images input'}",
             f"{captioned} captioned, {len(dataset.images) - captioned} without caption",
             f"crop: {dataset.crop}; buckets: " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(buckets.items()))]
    if dataset.trigger:
        lines.append(f"trigger word: {dataset.trigger}")
    lines += [f"WARNING: {w}" for w in dataset.warnings]
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
