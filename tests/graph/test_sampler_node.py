"""Test Sampler in the executor: its settings render samples during training (node preview, sample grid output), and
as a node it renders a finished LoRA."""
import logging

import graphs
import harness
import images


def test_samples_in_the_graph(comfy, caplog):
    from comfy.utils import set_progress_bar_global_hook
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=4, prefix="flux_lora/with_samples")
    sampler = {"prompts": "{trigger} a red thing\na green thing", "trigger": "tok_test", "width": 256, "height": 256,
               "steps": 2, "guidance": 3.5, "seed": 1, "every_n_steps": 2}
    g["sampler"] = {"class_type": "FluxLoRA_TestSampler", "inputs": dict(sampler)}
    g["train"]["inputs"]["sample_settings"] = ["sampler", 0]
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
