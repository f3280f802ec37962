"""DatasetLoader -> AutoCaption -> TriggerWord -> FluxLoRATrain -> SaveLoRA in ComfyUI's executor on a messy photo
folder (real photos, a corrupt file, a tiny image, an uncaptioned image); the second run takes every latent and
caption embedding from the disk cache."""
import os

import harness
import graphs
import photo_folder
from safetensors import safe_open


def test_folder_to_lora_with_cache(comfy, captioners):
    photo_folder.write_photo_folder(comfy["root"] / "input" / "photos_graph")
    autocaption = dict(model="tiny-florence2", mode="fill missing", florence_task="<DETAILED_CAPTION>",
                       qwen_prompt="Describe the image.", batch_size=4, max_new_tokens=12, write_sidecars=False)
    g = graphs.dataset_graph(comfy["names"], "photos_graph", steps=6, prefix="flux_lora/from_folder",
                             autocaption=autocaption)
    executor, _ = harness.run(g)
    assert executor.success, harness.error_message(executor)
    out = executor.history_result["outputs"]
    report = out["data"]["text"][0]
    for problem in ("corrupt.jpg", "empty.png", "notes.jpg", "tiny.png", "astronaut_copy.png", "coffee.webp: no caption"):
        assert problem in report, report
    assert "captioned 1 of 4" in out["caption"]["text"][0]  # only the uncaptioned coffee.webp
    assert "ohwx_style" in out["trigger"]["text"][0] and "4 captioned, 0 without caption" in out["trigger"]["text"][0]
    assert out["train"]["encoded"][0]["images"] == 4 and out["train"]["encoded"][0]["captions"] == 4
    assert out["train"]["memory"][0].startswith("VRAM plan (auto): ") and "(as loaded)" in out["train"]["memory"][0]

    saved = sorted(comfy["loras"].glob("flux_lora/from_folder_*.safetensors"))
    assert len(saved) == 1
    with safe_open(str(saved[0]), "pt") as f:
        meta = f.metadata()
    assert meta["ss_trigger_word"] == "ohwx_style" and len(meta["fluxlora_dataset_hash"]) == 64
    assert meta["ss_resolution"] == "(512, 512)" and meta["ss_num_train_images"] == "4"

    g["train"]["inputs"]["steps"] = 5  # train again on the same data: no encoder runs at all
    executor2, _ = harness.run(g)
    assert executor2.success, harness.error_message(executor2)
    encoded = executor2.history_result["outputs"]["train"]["encoded"][0]
    assert encoded["images"] == 0 and encoded["captions"] == 0 and encoded["cache_hits"] == 8


def test_a_listening_server_reads_only_input_and_datasets_folders(comfy, tmp_path, monkeypatch):
    """With --listen (other machines can queue prompts) an absolute path or '..' out of input/ is refused."""
    from comfy.cli_args import args
    outside = photo_folder.write_photo_folder(tmp_path / "private_photos")
    photo_folder.write_photo_folder(comfy["root"] / "input" / "shared_photos")
    loader = {"resolution": "512", "crop": "center square 1:1", "caption_extension": ".txt", "small_images": "skip"}
    monkeypatch.setattr(args, "listen", "0.0.0.0,::")
    for folder in (str(outside), os.path.relpath(outside, comfy["root"] / "input")):  # absolute, and '..' out of input/
        executor, _ = harness.run({"data": {"class_type": "FluxLoRA_DatasetLoader", "inputs": {"folder": folder, **loader}}})
        assert not executor.success and "--listen" in harness.error_message(executor), folder
    executor, _ = harness.run({"data": {"class_type": "FluxLoRA_DatasetLoader",
                                        "inputs": {"folder": "shared_photos", **loader}}})
    assert executor.success, harness.error_message(executor)
    monkeypatch.setattr(args, "listen", "127.0.0.1")
    executor, _ = harness.run({"data": {"class_type": "FluxLoRA_DatasetLoader", "inputs": {"folder": str(outside), **loader}}})
    assert executor.success, harness.error_message(executor)
