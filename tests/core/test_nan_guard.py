"""Steps whose loss or gradients are not finite are skipped; several in a row stop the run with a message that says
what to lower, keeping the LoRA of the last good step; no file with a non-finite tensor is ever written."""
import math

import pytest
import torch
from safetensors import safe_open

import graphs
import harness
import images
import training_data


def test_diverging_settings_stop_with_advice_and_keep_the_last_good_lora(comfy):
    """The hostile-input battery's case: lr 1.0, rank 1, alpha 1024 went to NaN at step 4 and saved a NaN LoRA."""
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=30, prefix="flux_lora/diverged",
                              learning_rate=1.0, rank=1, alpha=1024.0, max_grad_norm=0.0, save_every=0)
    runs_before = set(comfy["runs"].glob("*"))
    executor, _ = harness.run(g)
    assert not executor.success
    message = harness.error_message(executor)
    assert "Training diverged" in message and "Lower the learning rate (now 1)" in message, message
    assert "alpha/rank (now 1024/1)" in message and "is saved as" in message
    (run,) = set(comfy["runs"].glob("*")) - runs_before
    (kept,) = run.glob("*.safetensors")
    with safe_open(str(kept), "pt") as f:
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys())
        good = int(f.metadata()["ss_steps"])  # the last good step: the file holds its weights
    assert kept.name.endswith(f"_step{good:06d}.safetensors") and good >= 1
    assert f"(steps {good + 1}-{good + 5})" in message and f"last good step ({good})" in message
    assert not list(comfy["loras"].rglob("diverged_*"))  # SaveLoRA never ran


def test_a_single_bad_step_is_skipped_and_counted(comfy, core, monkeypatch):
    model, examples = training_data.model_and_examples(comfy)
    calls = []
    original = core.loop._batch

    def sometimes_nan(*args, **kwargs):
        calls.append(1)
        loss, xt, sigmas = original(*args, **kwargs)
        return (loss * float("nan") if len(calls) == 2 else loss), xt, sigmas
    monkeypatch.setattr(core.loop, "_batch", sometimes_nan)
    with torch.inference_mode():
        lora = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(steps=4, caption_dropout=0.0,
                                                                                      learning_rate=1e-2))
    assert lora.info.steps_done == 4 and lora.info.skipped_steps == 1 and len(lora.losses) == 3
    assert all(math.isfinite(v) for v in lora.losses)
    meta = core.export.metadata(lora.info, "kohya", "bf16")
    assert meta["fluxlora_skipped_steps"] == "1" and meta["ss_steps"] == "4"


def test_export_refuses_non_finite_weights(comfy, core):
    model, examples = training_data.model_and_examples(comfy)
    with torch.inference_mode():
        lora = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(steps=1, caption_dropout=0.0))
    key = next(k for k in lora if k.endswith("lora_up.weight"))
    lora[key] = lora[key].clone()
    lora[key][0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf values.*not saved"):
        core.export.lora_file_bytes(lora)
