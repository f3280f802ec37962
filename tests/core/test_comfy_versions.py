"""What the pack adapts to between ComfyUI versions (found by feature, not version): the in_training flag, per-block
attention patches, the datasets folder. Runs on every ComfyUI the suite runs against (v0.8.0 and v0.33.0 in CI)."""
import pytest
import torch

import training_data
from recording import RecordingHooks


def test_training_forward_and_backward_run_in_comfy_training_mode(comfy, core, monkeypatch):
    """Where ComfyUI has comfy.model_management.in_training (v0.14+), it is set while the model trains and cleared for
    checkpoint sampling and afterwards; where it does not exist, the pack does not create it."""
    import comfy.model_management as mm
    loop = core.loop
    model, examples = training_data.model_and_examples(comfy)
    had_flag = hasattr(mm, "in_training")
    during_forward = []
    original = loop._batch
    monkeypatch.setattr(loop, "_batch",
                        lambda *a, **k: during_forward.append(getattr(mm, "in_training", None)) or original(*a, **k))
    hooks = RecordingHooks(checkpoint_every=1, on_checkpoint=lambda step, weights: getattr(mm, "in_training", None))
    with torch.inference_mode():
        loop.train_flux_lora(model, examples, core.settings.TrainSettings(steps=2, caption_dropout=0.0), hooks)
    during_checkpoint = [flag for _, flag in hooks.checkpoints]
    assert len(during_forward) == 2 and len(during_checkpoint) == 2
    if had_flag:
        assert during_forward == [True, True] and during_checkpoint == [False, False] and mm.in_training is False
    else:
        assert during_forward == [None, None] and not hasattr(mm, "in_training")


def test_flag_is_restored_when_training_fails(core):
    import comfy.model_management as mm
    with pytest.raises(RuntimeError, match="boom"):
        with core.comfy_features.comfy_training_mode():
            raise RuntimeError("boom")
    assert getattr(mm, "in_training", False) is False


def attention_probe(q, k, v, pe=None, attn_mask=None, extra_options=None):
    return {"q": q}


def test_model_with_attention_patches_is_refused_by_name(comfy, core):
    """Per-block attention hooks (attn1_patch / attn1_output_patch, run by Flux blocks since ComfyUI v0.17) are not
    part of the training forward: such a MODEL is refused before training, naming the patch, and left unchanged."""
    model, examples = training_data.model_and_examples(comfy)
    patched = model.clone()
    patched.set_model_attn1_patch(attention_probe)
    before = patched.model_options["transformer_options"]["patches"]["attn1_patch"][:]
    with pytest.raises(ValueError, match=r"attention patches.*attn1_patch from test_comfy_versions\.attention_probe"):
        with torch.inference_mode():
            core.loop.train_flux_lora(patched, examples, core.settings.TrainSettings(steps=1, caption_dropout=0.0))
    assert patched.model_options["transformer_options"]["patches"]["attn1_patch"] == before
    assert not model.model_options.get("transformer_options", {}).get("patches")


def test_dataset_loader_finds_folders_in_the_datasets_directory(comfy):
    """ComfyUI >= 0.30 has a 'datasets' folder: Dataset Loader takes folder names from it too (after input/); without
    one, the same name is an error that lists the folders that do exist."""
    import folder_paths
    import harness
    import photo_folder
    has_datasets = "datasets" in folder_paths.folder_names_and_paths
    if has_datasets:
        photo_folder.write_photo_folder(comfy["root"] / "datasets" / "my_subject")
    prompt = {"data": {"class_type": "FluxLoRA_DatasetLoader",
                       "inputs": {"folder": "my_subject", "resolution": "512", "crop": "center square 1:1",
                                  "caption_extension": ".txt", "small_images": "skip"}}}
    executor, _ = harness.run(prompt)
    if has_datasets:
        assert executor.success, harness.error_message(executor)
        report = executor.history_result["outputs"]["data"]["text"][0]
        assert report.startswith("4 images from ") and "datasets" in report.splitlines()[0]
    else:
        assert not executor.success
        assert "'my_subject' does not exist" in harness.error_message(executor)
