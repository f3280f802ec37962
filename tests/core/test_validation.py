"""Validation loss on held-out images (fixed noise and noise levels), its schedule, early stopping and the
best-validation LoRA."""
import pytest
import torch

import training_data


def _run(comfy, core, tmp_path, **settings):
    model, clip, vae = training_data.load_models(comfy)
    base = dict(steps=6, learning_rate=1e-2, rank=4, caption_dropout=0.0, validation_images=1, validation_every=2)
    with torch.inference_mode():
        return core.run.train_run(model, clip, vae, training_data.dataset(comfy),
                                  core.settings.TrainSettings(**{**base, **settings}), runs_root=str(tmp_path))


def test_held_out_images_are_not_trained_on_and_validated_on_schedule(comfy, core, tmp_path):
    out = _run(comfy, core, tmp_path, validation_every=4, steps=10)
    info = out.lora.info
    assert info.examples == 3 and info.dataset.images == 4  # one of the four images held out
    assert [s for s, _ in info.validation] == [4, 8, 10]  # every 4 steps, and after the last
    assert all(v > 0 for _, v in info.validation)
    meta = core.export.metadata(info, "kohya", "bf16")
    assert meta["fluxlora_validation"].startswith("[[4, ") and meta["fluxlora_best_validation_step"] == str(info.best_step)
    assert core.validation.split_indices(4, 1, 0) == core.validation.split_indices(4, 1, 0)  # same seed, same split
    with pytest.raises(ValueError, match="keep at least one for training"):
        core.validation.split_indices(4, 4, 0)


def test_validation_loss_is_the_same_for_the_same_weights(comfy, core):
    """Fixed noise and noise levels: two evaluations of the same LoRA agree exactly (the training loss would not)."""
    model, examples = training_data.model_and_examples(comfy)
    validation = core.validation.ValidationSet.build(examples[:2], seed=3)
    settings = core.settings.TrainSettings(rank=4)
    with torch.inference_mode(False), core.loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        for p in lora.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
        first, second = (validation.loss(patcher, 1.0, "cpu") for _ in range(2))
    assert first == second and first > 0


def test_early_stopping_and_best_validation_output(comfy, core, tmp_path):
    """min_delta so large that only the first validation counts as an improvement: patience 2 stops after the third
    validation, and 'best validation' outputs the LoRA of the first (also saved in the run folder)."""
    out = _run(comfy, core, tmp_path, steps=20, validation_every=1, early_stopping_patience=2,
               early_stopping_min_delta=10.0, output_lora="best validation")
    info = out.lora.info
    assert info.stopped_early and [s for s, _ in info.validation] == [1, 2, 3] and info.best_step == 1
    assert info.steps_done == 1  # the output is the best step's LoRA
    assert any(path.endswith("_best_step000001.safetensors") for path in out.saved)
    last = _run(comfy, core, tmp_path, steps=20, validation_every=1, early_stopping_patience=2,
                early_stopping_min_delta=10.0)
    assert last.lora.info.steps_done == 3 and any(not torch.equal(last.lora[k], out.lora[k]) for k in out.lora)
    with pytest.raises(ValueError, match="'best validation' needs validation_images > 0"):
        core.settings.TrainSettings(output_lora="best validation")
