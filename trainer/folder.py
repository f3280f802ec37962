"""Reading a training folder: where it may be, which files pair up, decoding images and caption files safely.
A bad file never stops the folder: it is skipped and named in the report, with the reason."""
import hashlib
import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import pairs
from .dataset import DatasetImage, FluxDataset, caption_suffix

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
NOT_CAPTIONS = IMAGE_EXTENSIONS + (".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".safetensors", ".json", ".zip")
CROP_MODES = ("center square 1:1", "aspect buckets")
SMALL_IMAGE_POLICIES = ("skip", "include")
BUCKET_STEP = 64


class FolderNotAllowed(ValueError):
    pass


def _subfolders(root: Path, limit: int = 12) -> list:
    try:
        names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []
    return names[:limit] + (["..."] if len(names) > limit else [])


def _inside(path: Path, roots) -> bool:
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, os.path.realpath(r)]) == os.path.realpath(r) for r in roots)


def resolve_folder(folder: str, roots, allow_outside: bool = True) -> Path:
    """An absolute folder, or a folder name looked up in ``roots`` in order (ComfyUI's input directory, then its
    datasets folders). Without ``allow_outside`` (a server others can reach) the folder, links resolved, must lie
    inside one of ``roots``. Errors say what to type instead and list what the roots hold."""
    roots = [Path(r) for r in ([roots] if isinstance(roots, (str, Path)) else roots) if r]
    where = " or ".join(str(r) for r in roots) or "(no folders configured)"
    text = (folder or "").strip().strip('"')
    if not text:
        raise ValueError(f"DatasetLoader: no folder given. Enter an absolute path, or the name of a folder in {where}.")
    path = Path(os.path.expanduser(text))
    candidates = [path] if path.is_absolute() else [r / path for r in roots]
    found = next((c for c in candidates if c.is_dir()), None)
    if found is None:
        files = [c for c in candidates if c.exists()]
        if files:
            raise ValueError(f"DatasetLoader: '{files[0]}' is a file, not a folder. Enter the folder that holds the "
                             f"photos, e.g. '{files[0].parent}'.")
        listing = "; ".join(f"{r}: {', '.join(_subfolders(r)) or 'no folders'}" for r in roots)
        raise ValueError(f"DatasetLoader: the folder '{text}' does not exist (folder names are looked up in {where}). "
                         f"Folders there - {listing}.")
    if not allow_outside and not _inside(found, roots):
        raise FolderNotAllowed(
            f"DatasetLoader: '{text}' is outside ComfyUI's input and datasets folders. This ComfyUI accepts "
            "connections from other machines (--listen), so it only reads training folders inside "
            f"{where}: move the folder there, or add its parent under 'datasets:' (or 'fluxlora_datasets:') in "
            "extra_model_paths.yaml.")
    return found


def check_caption_extension(extension: str) -> str:
    ext = caption_suffix(extension)
    if len(ext) < 2 or any(c in ext for c in "/\\") or ext.count(".") != 1:
        raise ValueError(f"DatasetLoader: caption_extension '{extension}' is not a file extension; use e.g. '.txt' or "
                         "'.caption'.")
    if ext.lower() in NOT_CAPTIONS:
        raise ValueError(f"DatasetLoader: caption_extension '{ext}' is not a text file extension (it would read "
                         "images or binary files as captions); use e.g. '.txt'.")
    return ext


def read_caption(path: Path):
    """(caption text, a note on how it was decoded or None). UTF-8 (a BOM is dropped), UTF-16 by its BOM, else
    Windows-1252; binary files give no caption."""
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace").strip(), "UTF-8 with a byte-order mark"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace").strip(), "UTF-16"
    if b"\x00" in data:
        return "", "holds binary data, not text - ignored"
    try:
        return data.decode("utf-8").strip(), None
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace").strip(), "not UTF-8: read as Windows-1252 (cp1252); save it as UTF-8"


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float images scaled to 8 bits (a plain convert('RGB') clips them to white)."""
    array = np.asarray(image)
    if image.mode.startswith("I;16") or (image.mode == "I" and array.max(initial=0) > 255):
        array = array.astype(np.float64) * (255.0 / 65535.0)
    elif image.mode == "F":
        array = array.astype(np.float64) * (255.0 if array.max(initial=0) <= 1.0 else 1.0)
    return Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8), "L")


def read_image(data: bytes) -> Image.Image:
    """Decodes a whole image (truncated files fail here), applies its EXIF orientation, flattens transparency onto
    white and returns 8-bit RGB."""
    image = Image.open(io.BytesIO(data))
    image.load()
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        image = _to_8bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image.convert("RGB")


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


def _names(items, limit=8):
    items = list(items)
    return ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def _scan(path: Path, ext: str):
    """The folder's image files, caption files by stem, and notes on everything else in it."""
    images, captions, notes, other, subfolders, broken = [], {}, [], [], [], []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() and not os.path.exists(entry.path):
            broken.append(entry.name)
        elif entry.is_dir():
            subfolders.append(entry.name)
        elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
            images.append(Path(entry.path))
        elif Path(entry.name).suffix.lower() == ext.lower():
            captions[Path(entry.name).stem] = Path(entry.path)
        else:
            other.append(entry.name)
    stems = {}
    for image in images:
        stems.setdefault(image.stem, []).append(image.name)
    orphans = [captions[s].name for s in captions if s not in stems]
    for stem, names in stems.items():
        if len(names) > 1 and stem in captions:
            notes.append(f"{' and '.join(names)} share the caption file {captions[stem].name}: both get its caption")
    for label, names in (("sub-folder(s), not read (the folder is not searched recursively)", subfolders),
                         ("broken link(s)", broken), (f"caption file(s) with no image of the same name", orphans),
                         ("other file(s), ignored", other)):
        if names:
            notes.append(f"{len(names)} {label}: {_names(names)}")
    return images, captions, notes


def _controls(path: Path, files: list, control_folder: str, roots, ext: str, allow_outside: bool):
    """(target files, {stem: [control file per reference]}, problems): the edit pairs of a folder (none: every file a
    target)."""
    given = pairs.control_folder_names(control_folder)
    if given:
        control_paths = [resolve_folder(name, roots, allow_outside) for name in given]
        pairs.check_control_folders(path, control_paths, given)
        controls, orphans = pairs.match_controls(files, [_scan(p, ext)[0] for p in control_paths])
        if not controls:
            raise ValueError(f"DatasetLoader: no image in the control folder{'s' if len(given) > 1 else ''} "
                             f"'{control_folder}' has the name of an image in '{path}' (pairs are matched by file "
                             "name, e.g. 001.png and 001.jpg).")
        split_problems = []
    else:
        files, controls, orphans, split_problems = pairs.split_controls(files)
        if not controls and not orphans and not split_problems:
            return files, {}, []
    files, problems = pairs.pair_problems(files, controls, orphans, given)
    return files, controls, split_problems + problems


def _read_control(file: Path, size):
    data = file.read_bytes()
    image = read_image(data)
    return torch.from_numpy(np.asarray(fit(image, *size), dtype=np.uint8).copy()), hashlib.sha256(data).hexdigest(), image.size


def _read_controls(file: Path, control_files: list, digest: str, size, target, problems: list, notes: list):
    """[(pixels, sha256)] of ``file``'s reference images fitted to its bucket ``target``, or None when the pair must be
    skipped (a reference that cannot be read, or that is the image itself: the reason is added to ``problems``)."""
    read = []
    for control_file in control_files:
        try:
            control, control_digest, control_size = _read_control(control_file, target)
        except Exception as e:  # unreadable, corrupt, too large: this pair only
            problems.append(f"{file.name}: its control image {control_file.name} cannot be read "
                            f"({type(e).__name__}: {e}) - skipped")
            return None
        if control_digest == digest:   # the same file (a link) or a copy: no edit to learn
            problems.append(pairs.same_image_problem(file.name, control_file.name))
            return None
        if abs(control_size[0] / control_size[1] - size[0] / size[1]) > 0.01:
            notes.append(f"{control_file.name}: {control_size[0]}x{control_size[1]} has another shape than "
                         f"{file.name} ({size[0]}x{size[1]}); resized and center-cropped to the same "
                         f"{target[0]}x{target[1]}")
        read.append((control, control_digest))
    return read


def load_folder(folder: str, roots, resolution: int = 1024, crop: str = CROP_MODES[0], caption_extension: str = ".txt",
                small_images: str = "skip", allow_outside: bool = True, control_folder: str = "") -> FluxDataset:
    """Reads every image of ``folder`` (not recursive). Bad files never raise: they are reported and skipped. With a
    ``control_folder`` (or ``name_control.*`` files in the folder) it reads edit pairs: each image with its control
    image, resized and cropped to the image's bucket."""
    if crop not in CROP_MODES:
        raise ValueError(f"Unknown crop mode '{crop}'; choose one of {CROP_MODES}.")
    if small_images not in SMALL_IMAGE_POLICIES:
        raise ValueError(f"Unknown small-image policy '{small_images}'; choose one of {SMALL_IMAGE_POLICIES}.")
    ext = check_caption_extension(caption_extension)
    path = resolve_folder(folder, roots, allow_outside)
    files, caption_files, notes = _scan(path, ext)
    files, controls, problems = _controls(path, files, control_folder, roots, ext, allow_outside)
    read = []
    for file in files:  # bytes and captions first: duplicates keep the copy that has a caption
        try:
            data = file.read_bytes()
        except OSError as e:
            problems.append(f"{file.name}: cannot be read ({e.strerror or e}) - skipped")
            continue
        if not data:
            problems.append(f"{file.name}: empty file (0 bytes) - skipped")
            continue
        caption, how = read_caption(caption_files[file.stem]) if file.stem in caption_files else ("", None)
        if how:
            notes.append(f"{caption_files[file.stem].name}: {how}")
        read.append((file, data, hashlib.sha256(data).hexdigest(), caption))
    kept = {}
    for item in read:
        first = kept.get(item[2])
        if first is None or (item[3] and not first[3]):
            kept[item[2]] = item
    images = []
    for file, data, digest, caption in read:
        if kept[digest][0] != file:
            problems.append(f"{file.name}: duplicate of {kept[digest][0].name} (same content) - skipped")
            continue
        try:
            image = read_image(data)
        except UnidentifiedImageError:
            problems.append(f"{file.name}: not a readable image - skipped")
            continue
        except Exception as e:  # truncated, corrupt, decompression bomb, ...: this file only
            problems.append(f"{file.name}: corrupt, truncated or too large ({type(e).__name__}: {e}) - skipped")
            continue
        w, h = image.size
        square = crop == CROP_MODES[0]
        small = min(w, h) < resolution if square else w * h < resolution * resolution * 0.9
        target = (resolution, resolution) if square else bucket_size(w, h, resolution)
        if small:
            if small_images == "skip":
                problems.append(f"{file.name}: {w}x{h} is smaller than {resolution}px - skipped (set small_images to "
                                "'include' to train on it)")
                continue
            how = "upscaled" if square else f"kept at its own size {target[0]}x{target[1]}"
            problems.append(f"{file.name}: {w}x{h} is smaller than {resolution}px - included, {how}")
        if not caption:
            problems.append(f"{file.name}: no caption ({file.stem}{ext} missing or empty)")
        read_controls = _read_controls(file, controls.get(file.stem, []), digest, (w, h), target, problems, notes)
        if read_controls is None:
            continue
        pixels = torch.from_numpy(np.asarray(fit(image, *target), dtype=np.uint8).copy())
        images.append(DatasetImage(file.name, digest, pixels, caption, "file" if caption else "none",
                                   tuple(c for c, _ in read_controls), tuple(d for _, d in read_controls)))
    if controls:
        count = max(len(im.controls) for im in images) if images else 0
        notes.append(f"edit pairs: {len(images)} image(s) with {count} reference image{'s' if count > 1 else ''} each "
                     "(edit LoRA: captions are the edit "
                     "instructions)")
    if not images:
        raise ValueError(f"DatasetLoader: no usable images in '{path}' (png, jpg, jpeg, webp)."
                         + (" Problems: " + "; ".join(problems[:5]) if problems else ""))
    warnings = []
    if len(images) < 10:
        warnings.append(f"only {len(images)} images: 10-30 varied images usually train a better LoRA")
    if len(images) > 30:
        warnings.append(f"{len(images)} images: more than 30 rarely helps; raise steps to match")
    if resolution < 1024:
        warnings.append(f"resolution {resolution}: FLUX.1-dev is at its best trained at 1024")
    return FluxDataset(str(path), resolution, crop, tuple(images), tuple(problems), tuple(warnings), notes=tuple(notes),
                       caption_extension=ext)
