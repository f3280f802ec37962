"""Which checkpoint is best? A run folder's checkpoints side by side: every prompt (columns) for every chosen
checkpoint at every chosen strength (rows), one seed for every cell, each checkpoint applied as a normal LoRA patch
through the same sampling as the checkpoint samples (trainer/sampling.py: what LoraLoader + KSampler give).

One checkpoint file is in memory at a time. Everything that can be refused (an unknown step, a strength that is not a
number, a run trained for another model) is refused before the first image is rendered."""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from safetensors import safe_open
from safetensors.torch import load_file

from .checkpoint import lora_files
from .export import ARCHITECTURES
from .flux_model import flux_info
from .sampling import PromptSet, labelled_grid, render


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


def run_checkpoints(run: Path) -> list:
    """The run's checkpoint files, the first step first."""
    found = [Checkpoint(step, path) for step, path in sorted(lora_files(run))]
    if not found:
        raise ValueError(f"The run folder {run} holds no checkpoint LoRA files (<run>_step000250.safetensors): it "
                         "saved none yet (Advanced Settings' save_every) or they were moved.")
    return found


def choose_checkpoints(available: list, which: str) -> list:
    """``which``: 'all', 'last N', or step numbers ('500, 1000, 1500'), in the order given."""
    text = (which or "").strip().lower()
    steps = [c.step for c in available]
    if text in ("", "all"):
        return list(available)
    if text.startswith("last"):
        count = text[4:].strip()
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"checkpoints '{which}': write 'last' and a number, e.g. 'last 4'.")
        return list(available[-int(count):])
    by_step = {c.step: c for c in available}
    chosen = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise ValueError(f"checkpoints '{which}': '{part}' is not a step number. Write 'all', 'last 4' or step "
                             f"numbers separated by commas; this run has steps {_listing(steps)}.")
        if int(part) not in by_step:
            raise ValueError(f"checkpoints '{which}': this run has no checkpoint at step {part}; it has steps "
                             f"{_listing(steps)}.")
        chosen.append(by_step[int(part)])
    if not chosen:
        raise ValueError(f"checkpoints '{which}' names no step; this run has steps {_listing(steps)}.")
    return chosen


def _listing(steps, limit=16):
    return ", ".join(map(str, steps[:limit])) + (" ..." if len(steps) > limit else "")


def parse_strengths(text: str) -> tuple:
    """'1.0' or '0.5, 1.0' (LoraLoader's strength_model values; 0 adds one row of the model without the LoRA)."""
    values = []
    for part in (text or "").replace(";", ",").split(","):
        if part.strip():
            try:
                values.append(float(part))
            except ValueError:
                raise ValueError(f"strengths '{text}': '{part.strip()}' is not a number. Write LoRA strengths "
                                 "separated by commas, e.g. '0.75, 1.0' (a slider: '-1, 0, 1').") from None
    if not values:
        raise ValueError("strengths is empty: write at least one LoRA strength, e.g. '1.0'.")
    return tuple(dict.fromkeys(values))   # each strength once, in the order given


def file_metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def check_trained_for(model, checkpoints: list):
    """Refuses checkpoints trained for another model family or variant than ``model`` (from the file's
    ``modelspec.architecture``, which this pack writes); files without it are taken as they are."""
    info = flux_info(model)
    here = ARCHITECTURES[info.family].format(variant=info.variant)
    for checkpoint in checkpoints:
        there = file_metadata(checkpoint.path).get("modelspec.architecture")
        if there and there != here:
            raise ValueError(f"{checkpoint.path.name} was trained for {there.removesuffix('/lora')}, but this MODEL is "
                             f"{info.title}. Connect the model the run trained "
                             "(or pick a run of this model).")


def trigger_of(path: Path) -> str:
    return file_metadata(path).get("ss_trigger_word", "")


def _strength_label(strength: float, strengths: tuple) -> str:
    return "" if strengths == (1.0,) else f" x{strength:g}"


def compare_checkpoints(model, clip, vae, settings, checkpoints: list, strengths: tuple,
                        progress: Optional[Callable[[int, int, str], None]] = None):
    """(grid image (1, H, W, 3), row labels): a row per checkpoint and strength (strength 0: one row of the model
    alone, first), a column per prompt (an edit LoRA's references first). ``progress(done, total, what)`` after each row."""
    check_trained_for(model, checkpoints)
    prompts = PromptSet(clip, settings, trigger_of(checkpoints[-1].path), vae, settings.reference_images)
    rows, labels = [], []
    jobs = ([(None, 0.0)] if 0.0 in strengths else []) + [(c, s) for c in checkpoints for s in strengths if s != 0.0]
    weights, loaded = None, None
    for done, (checkpoint, strength) in enumerate(jobs, 1):
        if checkpoint is None:
            label = "base model"
            rows.append(prompts.row(render(model, vae, prompts)))
        else:
            if loaded != checkpoint.path:   # one checkpoint file in memory at a time
                weights = None
                weights, loaded = load_file(str(checkpoint.path)), checkpoint.path
            label = f"step {checkpoint.step}{_strength_label(strength, strengths)}"
            rows.append(prompts.row(render(model, vae, prompts, weights, strength=strength)))
        labels.append(label)
        logging.info("[FluxLoRA] compare: %s rendered (%d/%d)", label, done, len(jobs))
        if progress is not None:
            progress(done, len(jobs), label)
    return labelled_grid(rows, labels), labels

