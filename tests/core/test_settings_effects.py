"""Every declared training setting changes the run: a short run with the setting changed gives other losses or other
LoRA weights than the same run without the change. A setting whose effect is limited ('only' in its declaration) is
checked where it applies. A new setting without a probe here fails the suite."""
import pytest
import torch

import training_data

BASE = dict(steps=3, learning_rate=1e-2, rank=4, seed=0, caption_dropout=0.0)
VALIDATE = {"validation_images": 1, "validation_every": 1}
# setting -> (its value in the probe run, other settings both runs use[, what differs: default the losses or weights])
PROBES = {
    "validation_images": (1, {}),
    "validation_every": (1, {"validation_images": 1}, "validation"),
    "early_stopping_patience": (1, {**VALIDATE, "early_stopping_min_delta": 10.0}),
    "early_stopping_min_delta": (10.0, VALIDATE, "validation"),
    "output_lora": ("best validation", {**VALIDATE, "early_stopping_min_delta": 10.0}),
    "save_every": (1, {}, "files"),
    "ema": (True, {}),
    "ema_decay": (0.5, {"ema": True, "steps": 12}),   # the warm-up's (1+n)/(10+n) stays below 0.5 until step 9
    "adapter": ("lokr", {}),
    "lokr_factor": (4, {"adapter": "lokr"}),
    "init": ("pissa", {}),
    "preservation": ("differential output", {"class_prompt": "a thing"}),
    "class_prompt": ("a red thing", {"preservation": "differential output", "class_prompt": "a thing"}),
    "prior_loss_weight": (5.0, {"preservation": "differential output", "class_prompt": "a thing"}),
    "prodigy_d_coef": (10.0, {"optimizer": "prodigy", "learning_rate": 1.0, "steps": 6}),
    "steps": (4, {}),
    "learning_rate": (2e-2, {}),
    "rank": (8, {}),
    "seed": (1, {}),
    "alpha": (2.0, {}),
    "optimizer": ("adafactor", {}),
    "scheduler": ("linear", {}),
    "warmup_steps": (2, {}),
    "batch_size": (2, {}),
    "grad_accumulation": (2, {}),
    "max_grad_norm": (0.01, {}),
    "sigma_sampling": ("uniform", {}),
    "sigma_shift": (1.5, {"sigma_sampling": "shift"}),
    "loss_weighting": ("cosmap", {}),
    "caption_dropout": (0.9, {}),
    "train_guidance": (3.5, {}),
    "targets": ("attention", {}),
    "blocks": ("double 0", {}),
    "lora_dropout": (0.5, {}),
    "use_dora": (True, {}),
    "base_weights": ("nf4", {}),
    "reference_dropout": (0.5, {"dataset": "kontext pairs", "steps": 6}),
    "assistant_lora": ("tiny_assistant.safetensors", {}),
    "fp8_matmul": (True, {"base_weights": "fp8"}),
}
# proven to change memory use or speed, not results: below, in test_memory_tiers.py (vram: the plan and the check before
# encoding; gpu_weights_gb: partial loading with bit-identical results) and test_speed_switches.py (compile_blocks)
MEMORY_ONLY = {"gradient_checkpointing", "vram", "gpu_weights_gb", "compile_blocks"}


def test_every_declared_setting_has_a_probe(core):
    declared = {name for name, *_ in core.settings.declared()}
    assert set(PROBES) | MEMORY_ONLY == declared, "add a probe for: " + ", ".join(sorted(declared - set(PROBES) - MEMORY_ONLY))
    for name, _, _, meta in core.settings.declared():
        assert (name in MEMORY_ONLY) == (meta["only"] == "memory and speed"), name


def _outputs(comfy, core, tmp_path, dataset="images", **settings):
    model, clip, vae = training_data.load_models(comfy)
    data = training_data.paired_dataset(comfy) if dataset == "kontext pairs" else training_data.dataset(comfy)
    with torch.inference_mode():
        return core.run.train_run(model, clip, vae, data, core.settings.TrainSettings(**settings),
                                  cache_root=str(tmp_path / "cache"), runs_root=str(tmp_path / "runs"))


def _run(comfy, core, tmp_path, **settings):
    return _outputs(comfy, core, tmp_path, **settings).lora


def _signature(out, what):
    lora = out.lora
    if what == "validation":
        return lora.info.validation, lora.info.best_step, lora.info.stopped_early
    if what == "files":
        return [p.rsplit("_", 1)[-1] for p in out.saved]
    return lora.losses, {k: v.tolist() for k, v in lora.items()}


@pytest.mark.parametrize("name", sorted(PROBES))
def test_setting_changes_the_run(comfy, core, tmp_path, name):
    value, context, *what = PROBES[name]
    if name == "assistant_lora":
        training_data.assistant_lora(comfy, value)
    what = what[0] if what else "run"
    base = _outputs(comfy, core, tmp_path, **{**BASE, **context})
    probe = _outputs(comfy, core, tmp_path, **{**BASE, **context, name: value})
    assert _signature(probe, what) != _signature(base, what), f"{name}={value!r} changed nothing"


def test_gradient_checkpointing_changes_memory_not_results(comfy, core, tmp_path, monkeypatch):
    """Checkpointing recomputes each block in backward (fewer saved activations); the LoRA is the same up to float
    rounding."""
    calls = []
    original = core.blocks.checkpoint
    monkeypatch.setattr(core.blocks, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    on = _run(comfy, core, tmp_path, **BASE, gradient_checkpointing=True)
    used_with = len(calls)
    off = _run(comfy, core, tmp_path, **BASE, gradient_checkpointing=False)
    assert used_with == 3 * 4 and len(calls) == used_with  # 4 blocks x 3 steps with it; none without
    torch.testing.assert_close(torch.tensor(on.losses), torch.tensor(off.losses), rtol=1e-5, atol=1e-6)
    for k in on:
        torch.testing.assert_close(on[k], off[k], rtol=1e-4, atol=1e-6)
