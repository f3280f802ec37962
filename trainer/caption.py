"""Automatic captions with vision-language models through transformers (Florence-2, Qwen2.5-VL)."""
import gc
import json
import os
import weakref
from dataclasses import replace
from pathlib import Path

import torch

import comfy.model_management as mm
import comfy.utils

from .dataset import caption_suffix
from .files import unique_path, write_exclusive, write_replacing
from .images import to_pil

KNOWN_CAPTIONERS = {  # name in models/captioners -> (Hugging Face repo, architecture)
    "Florence-2-base": ("florence-community/Florence-2-base", "florence2"),
    "Florence-2-large": ("florence-community/Florence-2-large", "florence2"),
    "Qwen2.5-VL-3B-Instruct": ("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl"),
    "Qwen2.5-VL-7B-Instruct": ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"),
}
FLORENCE_TASKS = ("<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<CAPTION>")
CAPTION_MODES = ("fill missing", "overwrite", "append")
DEFAULT_QWEN_PROMPT = ("Describe this image in one detailed paragraph for training an image generator: the subject, "
                       "its appearance, the setting, lighting, colors and photographic or artistic style.")
LIVE = weakref.WeakSet()  # captioner models currently alive (tests check that none survive a run)


def architecture(path: Path) -> str:
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"{path} has no config.json: put the whole model folder (config, weights, processor files) there.")
    model_type = json.loads(config.read_text()).get("model_type", "")
    if model_type not in ("florence2", "qwen2_5_vl"):
        raise ValueError(f"{path} holds a '{model_type}' model; AutoCaption supports Florence-2 (transformers' native "
                         "florence2 format) and Qwen2.5-VL.")
    return model_type


def available(roots) -> list:
    """Known captioner names plus every model folder found in the captioners folders."""
    names = list(KNOWN_CAPTIONERS)
    for root in roots:
        if os.path.isdir(root):
            names += sorted(d for d in os.listdir(root) if (Path(root) / d / "config.json").is_file() and d not in names)
    return names


def locate(name: str, roots) -> Path:
    """The model folder for ``name``: found in a captioners folder, else downloaded there from the hub."""
    for root in roots:
        path = Path(root) / name
        if (path / "config.json").is_file():
            return path
    target = Path(roots[0]) / name
    if name not in KNOWN_CAPTIONERS:
        raise FileNotFoundError(f"Captioner '{name}' not found: expected a model folder at {target}.")
    repo = KNOWN_CAPTIONERS[name][0]
    try:
        from huggingface_hub import snapshot_download
        snapshot_download(repo_id=repo, local_dir=str(target))  # shows a download progress bar in the console
    except Exception as e:
        raise RuntimeError(
            f"Captioner '{name}' is not in {target} and could not be downloaded from the Hugging Face hub ({e}). "
            f"Offline? Download all files of https://huggingface.co/{repo} on another machine and copy them into "
            f"{target}.") from e
    return target


class Captioner:
    """A loaded VLM. Use as a context manager: leaving it frees the model (and its VRAM)."""

    def __init__(self, path: Path, device, dtype=None):
        from transformers import AutoProcessor
        self.kind = architecture(path)
        self.device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.processor = AutoProcessor.from_pretrained(str(path))
        if self.kind == "florence2":
            from transformers import Florence2ForConditionalGeneration as cls
        else:
            from transformers import Qwen2_5_VLForConditionalGeneration as cls
            self.processor.tokenizer.padding_side = "left"
        self.model = cls.from_pretrained(str(path), dtype=dtype).to(self.device).eval()
        self.dtype = dtype
        LIVE.add(self.model)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.model is not None:
            self.model.to("cpu")
            self.model = None
            self.processor = None
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @torch.no_grad()
    def caption(self, images, florence_task=FLORENCE_TASKS[0], prompt=DEFAULT_QWEN_PROMPT, max_new_tokens=160):
        pil = [to_pil(p) for p in images]
        if self.kind == "florence2":
            inputs = self.processor(text=[florence_task] * len(pil), images=pil, return_tensors="pt").to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=3, do_sample=False)
            texts = self.processor.batch_decode(ids, skip_special_tokens=False)
            return [self.processor.post_process_generation(t, task=florence_task, image_size=im.size)[florence_task]
                    .replace("<pad>", "").strip()
                    for t, im in zip(texts, pil)]
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        chat = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[chat] * len(pil), images=pil, return_tensors="pt", padding=True).to(self.device)
        ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        return [t.strip() for t in self.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)]


def merge_caption(existing: str, generated: str, mode: str) -> str:
    """One image's caption after captioning. Existing captions survive unless mode is 'overwrite'."""
    if mode == "fill missing":
        return existing if existing.strip() else generated
    if mode == "overwrite":
        return generated
    if mode == "append":
        return f"{existing.rstrip(' ,.')}, {generated}" if existing.strip() else generated
    raise ValueError(f"Unknown caption mode '{mode}'; choose one of {CAPTION_MODES}.")


def needs_caption(existing: str, mode: str) -> bool:
    return mode != "fill missing" or not existing.strip()


def write_sidecar(image_path: Path, extension: str, caption: str, overwrite: bool) -> str:
    """Writes the caption next to the image (atomically) and says what happened. An existing file is only replaced in
    overwrite mode, after a backup copy of it is kept (``<name>.<ext>.bak``, never overwriting an older backup). A file
    that cannot be written is reported, never raised: the caption is still in the node's output."""
    path = image_path.with_suffix(caption_suffix(extension))
    try:
        backup = ""
        if path.exists():
            if not overwrite:
                return f"{path.name}: exists, kept (use overwrite mode to replace)"
            old = path.read_bytes()
            if old.strip() == caption.encode("utf-8").strip():
                return f"{path.name}: unchanged"
            kept = unique_path(str(path.parent), path.name, ".bak")
            if not write_exclusive(kept, old):
                raise OSError(f"could not keep a backup as {kept}")
            backup = f" (the old one kept as {os.path.basename(kept)})"
        write_replacing(str(path), (caption + "\n").encode("utf-8"))
        return f"{path.name}: written{backup}"
    except OSError as e:
        return f"{path.name}: NOT written ({e.strerror or e}); the caption is still used for training"


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.safetensors"))


def caption_dataset(dataset, model_path: Path, mode: str, florence_task: str, qwen_prompt: str, batch_size: int,
                    max_new_tokens: int):
    """Captions the dataset's images that need it (per ``mode``). Returns (new dataset, {index: generated text}).

    Makes room in VRAM first (ComfyUI unloads other models as needed), checks for Cancel between batches, shows
    progress, and frees the captioner on every exit. Nothing to caption: no model is loaded."""
    todo = [i for i, im in enumerate(dataset.images) if needs_caption(im.caption, mode)]
    generated = {}
    if todo:
        device = mm.get_torch_device()
        mm.free_memory(_folder_bytes(model_path) * 1.3 + 1024 ** 3, device)
        progress = comfy.utils.ProgressBar(len(todo))
        with Captioner(model_path, device) as captioner:
            for start in range(0, len(todo), batch_size):
                mm.throw_exception_if_processing_interrupted()
                batch = todo[start:start + batch_size]
                texts = captioner.caption([dataset.images[i].pixels for i in batch], florence_task, qwen_prompt,
                                          max_new_tokens)
                generated.update(zip(batch, texts))
                progress.update(len(batch))
        mm.soft_empty_cache()
    images = []
    for i, im in enumerate(dataset.images):
        if i in generated:
            source = "auto" if not im.caption or mode == "overwrite" else im.caption_source + "+auto"
            im = replace(im, caption=merge_caption(im.caption, generated[i], mode), caption_source=source)
        images.append(im)
    return dataset.with_images(images), generated
