"""Samples during training (TestSampler settings -> FluxLoRATrain) and after it (TestSampler as a node)."""
import importlib
import logging
import math

import torch

import graphs
import harness
import images
import training_data


def test_previews_leave_training_unchanged(comfy, pack):
    """Same seed with and without rendering samples at checkpoints -> the same LoRA, byte for byte."""
    loop = importlib.import_module(f"{pack.__name__}.trainer.loop")
    export = importlib.import_module(f"{pack.__name__}.trainer.export")
    preview = importlib.import_module(f"{pack.__name__}.trainer.preview")
    model, examples = training_data.model_and_examples(comfy, pack)
    _, clip, vae = training_data.load_models(comfy)
    settings = loop.TrainSettings(steps=4, learning_rate=1e-2, seed=5)
    prompts = preview.PromptSet(clip, preview.SampleSettings(("{trigger} a red thing", "a blue thing"), 64, 64, 2, 3.5, 7), "tok")
    rendered = []

    def on_checkpoint(step, weights):
        rendered.append((step, preview.render(model, vae, prompts, weights)))
    with torch.inference_mode():
        plain = loop.train_flux_lora(model, examples, settings)
        with_previews = loop.train_flux_lora(model, examples, settings, checkpoint_every=2, on_checkpoint=on_checkpoint)
    assert [s for s, _ in rendered] == [2, 4] and rendered[0][1].shape == (2, 64, 64, 3)
    assert export.lora_file_bytes(plain, "kohya", "fp32") == export.lora_file_bytes(with_previews, "kohya", "fp32")
    assert not torch.equal(rendered[0][1], rendered[1][1])  # the LoRA changed between checkpoints
    # what the preview shows is what LoraLoader gives: rendering the final LoRA afterwards is identical
    assert torch.equal(preview.render(model, vae, prompts, with_previews), rendered[-1][1])
    assert prompts.prompts == ["tok a red thing", "a blue thing"]


def test_samples_in_the_graph(comfy, caplog):
    from comfy.utils import set_progress_bar_global_hook
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=4, prefix="flux_lora/with_samples")
    sampler = {"prompts": "{trigger} a red thing\na green thing", "trigger": "tok_test", "width": 256, "height": 256,
               "steps": 2, "guidance": 3.5, "seed": 1, "every_n_steps": 2}
    g["sampler"] = {"class_type": "FluxLoRA_TestSampler", "inputs": dict(sampler)}
    g["train"]["inputs"]["samples"] = ["sampler", 0]
    g["after"] = {"class_type": "FluxLoRA_TestSampler", "inputs": {**sampler, "model": ["unet", 0], "clip": ["clip", 0],
                                                                    "vae": ["vae", 0], "lora": ["train", 0]}}
    g["grid"] = {"class_type": "PreviewImage", "inputs": {"images": ["train", 4]}}
    previews = []
    set_progress_bar_global_hook(lambda v, t, preview=None, node_id=None: preview and previews.append((v, preview)))
    try:
        with caplog.at_level(logging.WARNING):
            executor, _ = harness.run(g)
    finally:
        set_progress_bar_global_hook(None)
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
    assert executor.success, harness.error_message(executor)
    out = executor.history_result["outputs"]
    assert out["train"]["checkpoints"] == [2, 4]
    assert len(out["train"]["images"]) == 2  # loss curve + sample grid on the node
    assert [v for v, _ in previews if v in (2, 4)] == [2, 4]  # the node preview shows samples as soon as they exist
    assert previews[0][1][0] == "JPEG"
    assert out["grid"]["images"] and out["after"]["images"]


def test_weights_recreated_in_inference_mode_during_a_checkpoint_stay_trainable(comfy, pack):
    """Another node may (re)create weights under inference mode while training waits (sampling loads offloaded
    modules that way on a GPU). Every reload of the training patcher must make them usable for backward again."""
    import comfy.utils as comfy_utils
    loop = importlib.import_module(f"{pack.__name__}.trainer.loop")
    model, examples = training_data.model_and_examples(comfy, pack)
    dm = model.model.diffusion_model
    name = "double_blocks.0.img_attn.proj.weight"

    def on_checkpoint(step, weights):
        with torch.inference_mode():
            comfy_utils.set_attr_param(dm, name, dm.get_parameter(name).detach().clone())
        assert dm.get_parameter(name).is_inference()
    with torch.inference_mode():
        lora = loop.train_flux_lora(model, examples, loop.TrainSettings(steps=4), checkpoint_every=2,
                                    on_checkpoint=on_checkpoint)
    assert len(lora.losses) == 4 and all(math.isfinite(v) for v in lora.losses)
