"""Automatic captions with vision-language models through transformers: Florence-2, Qwen2.5-VL, Qwen3-VL and
JoyCaption Beta One (a LLaVA model), each with the prompts its model card documents, in four styles."""
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

GB = 1024 ** 3
KNOWN_CAPTIONERS = {  # name in models/captioners -> (Hugging Face repo, architecture, GB of VRAM to run it in bf16)
    "Florence-2-base": ("florence-community/Florence-2-base", "florence2", 1.0),
    "Florence-2-large": ("florence-community/Florence-2-large", "florence2", 2.5),
    "Qwen2.5-VL-3B-Instruct": ("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl", 9.0),
    "Qwen2.5-VL-7B-Instruct": ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", 18.0),
    "Qwen3-VL-2B-Instruct": ("Qwen/Qwen3-VL-2B-Instruct", "qwen3_vl", 6.0),
    "Qwen3-VL-4B-Instruct": ("Qwen/Qwen3-VL-4B-Instruct", "qwen3_vl", 11.0),
    "Qwen3-VL-8B-Instruct": ("Qwen/Qwen3-VL-8B-Instruct", "qwen3_vl", 19.0),
    "llama-joycaption-beta-one-hf-llava": ("fancyfeast/llama-joycaption-beta-one-hf-llava", "llava", 19.0),
}
AUTO = "auto (best that fits)"
AUTO_ORDER = ("Qwen3-VL-8B-Instruct", "Qwen3-VL-4B-Instruct", "Qwen3-VL-2B-Instruct")   # then Florence-2-large
FALLBACK = "Florence-2-large"
ARCHITECTURES = ("florence2", "qwen2_5_vl", "qwen3_vl", "llava")
CHAT_KINDS = ("qwen2_5_vl", "qwen3_vl", "llava")
FLORENCE_TASKS = ("<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>", "<CAPTION>")
CAPTION_MODES = ("fill missing", "overwrite", "append")
CAPTION_STYLES = ("detailed", "short", "tags", "instruction")
DEFAULT_QWEN_PROMPT = ("Describe this image in one detailed paragraph for training an image generator: the subject, "
                       "its appearance, the setting, lighting, colors and photographic or artistic style.")
QWEN_PROMPTS = {
    "detailed": DEFAULT_QWEN_PROMPT,
    "short": "Describe this image in one short sentence for training an image generator: the main subject and the "
             "setting.",
    "tags": "List what this image shows as comma-separated tags for training an image generator (subject, "
            "attributes, setting, lighting, style), most important first. Answer with the tags only.",
    "instruction": "The first {references} image(s) show the original; the last image shows the result of editing it. "
                   "Write the editing instruction that turns the original into the result, as one imperative "
                   "sentence (for example: turn the photo into a watercolor painting). Answer with the instruction "
                   "only.",
}
# JoyCaption Beta One's documented caption prompts (its model card and caption types) and system prompt
JOYCAPTION_SYSTEM = "You are a helpful image captioner."
JOYCAPTION_PROMPTS = {
    "detailed": "Write a long descriptive caption for this image in a formal tone.",
    "short": "Write a short descriptive caption for this image in a formal tone.",
    "tags": "Write a list of Booru-like tags for this image.",
}
LIVE = weakref.WeakSet()  # captioner models currently alive (tests check that none survive a run)


def architecture(path: Path) -> str:
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"{path} has no config.json: put the whole model folder (config, weights, processor files) there.")
    model_type = json.loads(config.read_text()).get("model_type", "")
    if model_type not in ARCHITECTURES:
        raise ValueError(f"{path} holds a '{model_type}' model; AutoCaption supports Florence-2 (transformers' native "
                         "florence2 format), Qwen2.5-VL, Qwen3-VL and JoyCaption (LLaVA).")
    return model_type


def custom_prompt(prompt: str) -> str:
    """The user's own prompt, or '' for the caption style's (the old default prompt, saved in workflows before the
    styles existed, is the 'detailed' style's)."""
    text = (prompt or "").strip()
    return "" if text == DEFAULT_QWEN_PROMPT else text


def captioner_kind(name: str, roots) -> str:
    """The architecture of captioner ``name`` without loading (or downloading) it."""
    for root in roots:
        if (Path(root) / name / "config.json").is_file():
            return architecture(Path(root) / name)
    if name in KNOWN_CAPTIONERS:
        return KNOWN_CAPTIONERS[name][1]
    raise FileNotFoundError(f"Captioner '{name}' not found in {', '.join(map(str, roots))}.")


def check_style(kind: str, style: str, paired: bool, prompt: str = "") -> str:
    """Refuses, before any model loads, a caption style the model cannot write or the data cannot have; returns a note
    for the report when an input goes unused ('' otherwise)."""
    if style not in CAPTION_STYLES:
        raise ValueError(f"Unknown caption_style '{style}'; choose one of {CAPTION_STYLES}.")
    if style == "instruction" and not paired:
        raise ValueError("caption_style 'instruction' writes edit instructions for edit pairs (a dataset with "
                         "control images); this dataset has none. Pick 'detailed', 'short' or 'tags'.")
    if kind == "florence2" and style in ("tags", "instruction"):
        raise ValueError(f"Florence-2 writes captions only, not {style}: pick a Qwen3-VL model (or JoyCaption for "
                         "tags), or caption_style 'detailed' / 'short'.")
    if kind == "llava" and style == "instruction":
        raise ValueError("JoyCaption sees one image at a time, so it cannot compare a pair: pick a Qwen3-VL model for "
                         "caption_style 'instruction'.")
    if kind == "florence2" and custom_prompt(prompt):
        return ("note: Florence-2 takes no prompt (its captions follow florence_task / caption_style); qwen_prompt "
                "was not used - pick a chat model (Qwen3-VL, Qwen2.5-VL, JoyCaption) for your own prompt")
    return ""


def choose_captioner(name: str, roots, device=None) -> str:
    """``name``, or for 'auto' the largest Qwen3-VL whose bf16 run fits the GPU (ComfyUI frees other models first),
    else Florence-2-large (also on the CPU, where the large VLMs are too slow). Refuses a chosen model that cannot fit
    the GPU at all, before loading it."""
    device = torch.device(device if device is not None else mm.get_torch_device())
    total = mm.get_total_memory(device) if device.type == "cuda" else 0
    if name == AUTO:
        fitting = [n for n in AUTO_ORDER if KNOWN_CAPTIONERS[n][2] * GB <= total]
        return fitting[0] if fitting else FALLBACK
    need = _needed_bytes(name, roots)
    if device.type == "cuda" and need > total:
        raise ValueError(f"Captioner '{name}' needs about {need / GB:.0f} GB of VRAM; this GPU has {total / GB:.0f} GB. "
                         f"Pick a smaller one (or '{AUTO}').")
    return name


def _needed_bytes(name: str, roots) -> float:
    for root in roots:
        path = Path(root) / name
        if (path / "config.json").is_file():
            return _folder_bytes(path) * 1.2 + GB
    return KNOWN_CAPTIONERS[name][2] * GB if name in KNOWN_CAPTIONERS else 0.0


def available(roots) -> list:
    """'auto', the known captioner names, and every model folder found in the captioners folders."""
    names = [AUTO, *KNOWN_CAPTIONERS]
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
        if self.kind in CHAT_KINDS:
            self.processor.tokenizer.padding_side = "left"   # batched generation continues every row at its end
        self.model = _model_class(self.kind).from_pretrained(str(path), dtype=dtype).to(self.device).eval()
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
    def caption(self, items, style="detailed", prompt="", florence_task=FLORENCE_TASKS[0], max_new_tokens=160):
        """One caption per item; an item is a list of images (one, or for 'instruction' the references then the
        edited image). ``prompt`` replaces the style's prompt for the chat models."""
        if self.kind == "florence2":
            pil = [to_pil(images[-1]) for images in items]
            task = "<CAPTION>" if style == "short" else florence_task
            inputs = self.processor(text=[task] * len(pil), images=pil, return_tensors="pt").to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=3, do_sample=False)
            texts = self.processor.batch_decode(ids, skip_special_tokens=False)
            return [self.processor.post_process_generation(t, task=task, image_size=im.size)[task]
                    .replace("<pad>", "").strip()
                    for t, im in zip(texts, pil)]
        chats, pil = [], []
        for images in items:
            chats.append(self.processor.apply_chat_template(self._messages(len(images), style, prompt),
                                                            add_generation_prompt=True, tokenize=False))
            pil += [to_pil(im) for im in images]
        inputs = self.processor(text=chats, images=pil, return_tensors="pt", padding=True).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        return [t.strip() for t in self.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:],
                                                               skip_special_tokens=True)]

    def _messages(self, images: int, style: str, prompt: str) -> list:
        """The chat as each model's card shows it: Qwen's images then the instruction in one user message; JoyCaption's
        system prompt and a user prompt whose image the processor places."""
        custom = custom_prompt(prompt)
        if self.kind == "llava":
            return [{"role": "system", "content": JOYCAPTION_SYSTEM},
                    {"role": "user", "content": custom or JOYCAPTION_PROMPTS[style]}]
        text = custom or QWEN_PROMPTS[style].format(references=images - 1)
        return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}]


def _model_class(kind: str):
    import transformers
    return getattr(transformers, {"florence2": "Florence2ForConditionalGeneration",
                                  "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
                                  "qwen3_vl": "Qwen3VLForConditionalGeneration",
                                  "llava": "LlavaForConditionalGeneration"}[kind])


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


def _caption_images(im, style: str) -> list:
    """What the captioner sees for one dataset image: the image, or for 'instruction' its references then it."""
    return [*im.controls, im.pixels] if style == "instruction" else [im.pixels]


def caption_dataset(dataset, model_path: Path, mode: str, florence_task: str, qwen_prompt: str, batch_size: int,
                    max_new_tokens: int, style: str = "detailed"):
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
                texts = captioner.caption([_caption_images(dataset.images[i], style) for i in batch], style,
                                          qwen_prompt, florence_task, max_new_tokens)
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
