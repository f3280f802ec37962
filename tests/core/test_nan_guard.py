"""Steps whose loss or gradients are not finite are skipped; several in a row stop the run with a message that says
what to lower, keeping a LoRA that still samples (checked with one forward of the MODEL); no file with a non-finite
tensor is ever written."""
import math
import re

import pytest
import torch
from safetensors import safe_open

import graphs
import harness
import images
import training_data


DIVERGING = dict(learning_rate=1.0, rank=1, alpha=1024.0, max_grad_norm=0.0)   # NaN from step 4 on the tiny model


def _sampled(comfy, lora_file):
    """The latent stock LoraLoaderModelOnly + KSampler (3 Euler steps) give with ``lora_file`` on the tiny MODEL."""
    import comfy.model_management as mm
    import nodes
    model, clip, _ = training_data.load_models(comfy)
    name = lora_file.relative_to(comfy["runs"].parent).as_posix()   # as LoraLoader lists the run folder's files
    patched = nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)[0]
    positive = nodes.CLIPTextEncode().encode(clip, "tok_test a red thing")[0]
    negative = nodes.CLIPTextEncode().encode(clip, "")[0]
    with torch.inference_mode():
        latent = nodes.common_ksampler(patched, 1, 3, 1.0, "euler", "simple", positive, negative,
                                       {"samples": torch.zeros(1, 16, 8, 8)})[0]["samples"]
    mm.unload_all_models()  # ComfyUI patched the shared weights in place for this clone: put them back
    return latent


def test_diverging_settings_stop_with_advice_and_keep_a_lora_that_still_samples(comfy):
    """The hostile-input battery's case: lr 1.0, rank 1, alpha 1024 went to NaN at step 4 and saved a NaN LoRA; then
    it kept the last step with a finite loss, whose weights are finite but make KSampler's output NaN (black images):
    the update of that step started the divergence. The weights from before it are kept, and sample."""
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=30, prefix="flux_lora/diverged",
                              save_every=0, **DIVERGING)
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
        good = int(f.metadata()["ss_steps"])  # the file holds the weights of this step
    assert kept.name.endswith(f"_step{good:06d}.safetensors") and good >= 1
    assert f"(steps {good + 2}-{good + 6})" in message, message   # the update of step good + 1 started it
    assert f"from before the update that started it (step {good}) gives finite output" in message and str(kept) in message
    assert torch.isfinite(_sampled(comfy, kept)).all()
    assert not list(comfy["loras"].rglob("diverged_*"))  # SaveLoRA never ran


def test_a_kept_lora_is_checked_and_else_the_latest_checkpoint_that_passes_is_named(comfy, core, tmp_path,
                                                                                   monkeypatch):
    """The LoRA a diverged run keeps is named only after one forward of the MODEL with it was finite: when the weights
    from before the divergence fail that check, the latest checkpoint file that passes it is named instead (and nothing
    new is written); when none passes, the message says that no LoRA was kept."""
    model, examples = training_data.model_and_examples(comfy)
    settings = core.settings.TrainSettings(steps=30, caption_dropout=0.0, save_every=1, **DIVERGING)
    real, checked = core.loop.finite_prediction, []

    def first_check_fails(model, weights, example):
        checked.append(1)
        return len(checked) > 1 and real(model, weights, example)

    def diverge(check):
        monkeypatch.setattr(core.loop, "finite_prediction", check)
        run = core.loop.RunFolder(core.checkpoint.new_run_folder(str(tmp_path), "diverging"),
                                  {"dataset": "", "model": "", "settings": {}})
        with pytest.raises(core.loop.TrainingDiverged) as caught, torch.inference_mode():
            core.loop.train_flux_lora(model, examples, settings, run=run)
        message = str(caught.value)
        last_good = int(re.search(r"\(steps (\d+)-", message).group(1)) - 1
        assert {step for step, _ in core.checkpoint.lora_files(run.path)} == set(range(1, last_good + 1)), message
        return message, last_good

    message, last_good = diverge(first_check_fails)
    found = re.search(r"already overflow this MODEL's output; the latest checkpoint that does not is step (\d+): "
                      r"(\S+\.safetensors)\.$", message)
    assert found and int(found.group(1)) == last_good - 2, message   # the one before the weights that failed the check
    assert found.group(2).endswith(f"_step{last_good - 2:06d}.safetensors") and len(checked) == 2
    message, _ = diverge(lambda *a: False)
    assert re.search(r"No LoRA was kept: .*Start a new run with the lower setting\.$", message), message


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
