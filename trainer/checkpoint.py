"""Run folders, checkpoints and resume.

Each run writes into its own folder ``<loras>/fluxlora_runs/<name>_<date>/``: at each checkpoint the LoRA so far
(``<name>_step000500.safetensors``, listed by LoraLoader at once) and the training state (``training-state.fluxlora``:
adapter, optimizer, scheduler, random generators, data position, histories; replaced at each checkpoint). Resuming
restores all of it, so a cancelled run resumed to the same step count gives the same LoRA, byte for byte.
"""
import hashlib
import io
import json
import os
import re
import time
from pathlib import Path

import torch

from .files import write_replacing

RUNS_FOLDER = "fluxlora_runs"
STATE_FILE = "training-state.fluxlora"  # not a LoRA: an extension LoraLoader does not list
FORMAT = 1


def runs_root(loras_folders: list, output_dir: str) -> str:
    """``<output>/loras/fluxlora_runs`` where ComfyUI lists ``<output>/loras`` (its main.py does), else the first loras
    folder's ``fluxlora_runs``."""
    preferred = os.path.join(output_dir, "loras")
    base = preferred if any(os.path.abspath(f) == os.path.abspath(preferred) for f in loras_folders) else loras_folders[0]
    return os.path.join(base, RUNS_FOLDER)


def list_runs(root: str) -> list:
    """Run folder names that hold a training state, newest first."""
    if not os.path.isdir(root):
        return []
    runs = [(os.path.getmtime(os.path.join(root, d, STATE_FILE)), d) for d in os.listdir(root)
            if os.path.isfile(os.path.join(root, d, STATE_FILE))]
    return [d for _, d in sorted(runs, reverse=True)]


def new_run_folder(root: str, hint: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", hint or "").strip("_")[:40] or "lora"
    base = Path(root) / f"{slug}_{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    path.mkdir(parents=True)
    return path


def find_run(root: str, name: str, action: str = "resume") -> Path:
    """The run folder ``name`` ('latest': the newest) under ``root``; ``action`` words the errors."""
    runs = list_runs(root)
    if name == "latest":
        if not runs:
            raise ValueError(f"Nothing to {action}: no run with a saved training state in {root}.")
        name = runs[0]
    if name not in runs:
        raise ValueError(f"Cannot {action} '{name}': no training state in {os.path.join(root, name)}. "
                         f"Runs there: {', '.join(runs[:8]) or 'none'}.")
    return Path(root) / name


def lora_file_name(run: Path, step: int, best: bool = False) -> Path:
    return run / f"{run.name}_{'best_' if best else ''}step{step:06d}.safetensors"


def lora_files(run: Path) -> list:
    """(step, path) of the run's checkpoint LoRA files (not the best-validation ones), the latest step first."""
    pattern = re.compile(re.escape(run.name) + r"_step(\d{6})\.safetensors")
    found = [(int(m.group(1)), run / m.group(0)) for m in (pattern.fullmatch(p.name) for p in run.glob("*.safetensors"))
             if m]
    return sorted(found, reverse=True)


def model_identity(model) -> str:
    """Identifies the base weights and the LoRAs stacked on them (sampled bytes of a few tensors; original weights
    where ComfyUI patched them in place)."""
    dm = model.model.diffusion_model
    h = hashlib.sha256(json.dumps(model.model.model_config.unet_config, sort_keys=True, default=str).encode())
    params = [(n, p) for n, p in dm.named_parameters() if ".lora_" not in n]
    for name, p in params:
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}".encode())
    backup = getattr(model, "backup", {}) or {}
    for name, p in params[:: max(1, len(params) // 8)]:
        stored = backup.get(f"diffusion_model.{name}")
        t = stored.weight if stored is not None else p
        h.update(t.detach().reshape(-1)[:4096].float().cpu().numpy().tobytes())
    for key in sorted(model.patches):
        h.update(f"{key}|{[round(float(p[0]), 6) for p in model.patches[key]]}".encode())
    return h.hexdigest()[:24]


def check_resumable(saved: dict, identity: dict, settings_dict: dict, resumable: set, defaults: dict = None):
    """Refuses, saying what differs, when the data, model or the settings that shape training differ. ``defaults``:
    every setting's default, what a run saved before a setting existed trained with."""
    old = saved["identity"]
    problems = []
    if old["dataset"] != identity["dataset"]:
        problems.append("the dataset (its images, captions or crop) changed")
    if old["model"] != identity["model"]:
        problems.append("the MODEL is another one (other weights, or other LoRAs applied to it)")
    before, now = old.get("base_weights", "as loaded"), identity.get("base_weights", "as loaded")
    if before != now:
        problems.append(f"the run trained against base weights '{before}', this one would use '{now}' (set base_weights "
                        f"to '{before}')")
    then = {**(defaults or {}), **old["settings"]}
    changed = [f"{k}: {then.get(k)!r} then, {v!r} now" for k, v in settings_dict.items()
               if k not in resumable and then.get(k) != v]
    if changed:
        problems.append("settings that shape training differ (" + "; ".join(changed) + ")")
    if saved["step"] >= settings_dict["steps"]:
        problems.append(f"it already has {saved['step']} steps: raise steps above that to train on")
    if problems:
        raise ValueError(f"Cannot resume run '{saved['run']}': " + "; ".join(problems) + ". Resume with the same "
                         "dataset, model and settings (steps and the save/validation cadence may change), or start a "
                         "new run (resume: off).")


def save_state(run: Path, payload: dict):
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    write_replacing(str(run / STATE_FILE), buffer.getvalue())


def load_state(run: Path) -> dict:
    try:
        with torch.inference_mode(False):  # nodes run under inference mode; the optimizer updates these tensors
            saved = torch.load(run / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"The training state in {run} cannot be read ({type(e).__name__}: {e}).") from e
    if saved.get("format") != FORMAT:
        raise ValueError(f"The training state in {run} was written by another version of this pack.")
    return saved


def rng_state(noise_generator: torch.Generator, device) -> dict:
    cuda = torch.cuda.get_rng_state(device) if torch.device(device).type == "cuda" else None
    return {"noise": noise_generator.get_state(), "torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng(saved: dict, noise_generator: torch.Generator, device):
    noise_generator.set_state(saved["noise"])
    torch.set_rng_state(saved["torch"])
    if saved.get("cuda") is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(saved["cuda"], device)
