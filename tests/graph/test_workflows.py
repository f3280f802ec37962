"""The bundled workflows: the API-format files run in ComfyUI's executor (with tiny models swapped in), and the UI
files (drag-and-drop) describe the same graphs."""
import json
from pathlib import Path

import pytest

import harness
import photo_folder
import workflow_swaps

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
NAMES = ["flux_lora_trainer", "flux_lora_trainer_captioned_folder"]


def load_api(name):
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_runs(comfy, captioners, name):
    folder = photo_folder.write_photo_folder(comfy["root"] / "input" / f"wf_{name}")
    prompt = workflow_swaps.tiny_api(load_api(name), folder.name, f"flux_lora/wf_{name}")
    executor, _ = harness.run(prompt)
    assert executor.success, harness.error_message(executor)
    out = executor.history_result["outputs"]
    assert out["8"]["checkpoints"] == [2, 4], sorted(out)
    assert out.get("20", {}).get("images"), (sorted(out), executor.status_messages[-3:])
    assert out["9"]["text"][0].startswith(f"Saved flux_lora/wf_{name}_000004steps_")
    assert ("5" in prompt) == (name == "flux_lora_trainer")  # the minimal workflow has no AutoCaption


def _pairs(input_dir: Path, name: str) -> tuple:
    """A Kontext pair folder (512 px 'after' images with edit captions) and its control folder ('before')."""
    import numpy as np
    from PIL import Image
    targets, controls = input_dir / name, input_dir / f"{name}_control"
    targets.mkdir(exist_ok=True), controls.mkdir(exist_ok=True)
    g = np.random.default_rng(0)
    for i in range(4):
        before = g.integers(0, 255, (8, 8, 3), dtype=np.uint8).repeat(64, 0).repeat(64, 1)
        Image.fromarray(before).save(controls / f"{i:03d}.png")
        Image.fromarray(255 - before).save(targets / f"{i:03d}.png")
        (targets / f"{i:03d}.txt").write_text("invert the colors")
    Image.fromarray(before[:256, :256]).save(input_dir / f"{name}_example.png")
    return targets, controls


def test_kontext_workflow_trains_from_pairs_and_edits_with_the_lora(comfy, caplog):
    """The bundled Kontext workflow: pairs from a control folder train, checkpoint samples use a control image, and the
    saved LoRA loads in stock LoraLoaderModelOnly (no key left unloaded) into ComfyUI's Kontext sampling graph."""
    targets, controls = _pairs(comfy["root"] / "input", "wf_kontext")
    prompt = workflow_swaps.tiny_api(load_api("flux_lora_kontext"), targets.name, "flux_lora/wf_kontext")
    prompt["4"]["inputs"]["control_folder"] = controls.name
    prompt["21"]["inputs"]["image"] = "wf_kontext_example.png"
    executor, _ = harness.run(prompt)
    assert executor.success, harness.error_message(executor)
    out = executor.history_result["outputs"]
    assert out["8"]["checkpoints"] == [2, 4] and out["8"]["encoded"][0]["images"] == 8   # 4 targets + 4 controls
    assert out.get("20", {}).get("images")
    assert out["9"]["text"][0].startswith("Saved flux_lora/wf_kontext_000004steps_")
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage() or "NOT LOADED" in r.getMessage()]


def test_klein_edit_workflow_trains_two_reference_pairs_and_edits_with_the_lora(comfy, caplog):
    """The bundled FLUX.2 [klein] edit workflow: targets with two reference folders train (every reference encoded
    once), checkpoint samples show both references, and the saved LoRA loads in stock LoraLoaderModelOnly into a
    KSampler graph with two chained ReferenceLatent nodes (no key left unloaded)."""
    import numpy as np
    from PIL import Image
    files = comfy["names"]["families"]
    if "klein" not in files:
        pytest.skip("this ComfyUI has no FLUX.2 [klein] text encoder (Qwen3 arrived after v0.8.0)")
    input_dir = comfy["root"] / "input"
    targets, first, second = (input_dir / f"wf_klein_edit{s}" for s in ("", "_control_1", "_control_2"))
    for folder in (targets, first, second):
        folder.mkdir(exist_ok=True)
    g = np.random.default_rng(1)
    for i in range(3):
        scene = g.integers(0, 255, (8, 8, 3), dtype=np.uint8).repeat(64, 0).repeat(64, 1)
        thing = g.integers(0, 255, (8, 8, 3), dtype=np.uint8).repeat(64, 0).repeat(64, 1)
        Image.fromarray(scene).save(first / f"{i:03d}.png")
        Image.fromarray(thing).save(second / f"{i:03d}.png")
        Image.fromarray(((scene.astype(int) + thing) // 2).astype(np.uint8)).save(targets / f"{i:03d}.png")
        (targets / f"{i:03d}.txt").write_text("put the object from the second image into the first image")
    Image.fromarray(scene).save(input_dir / "wf_klein_edit_example.png")
    prompt = workflow_swaps.tiny_api(load_api("flux_lora_klein_edit"), targets.name, "flux_lora/wf_klein_edit")
    assert prompt["4"]["inputs"]["control_folder"] == "klein_edit_dataset_control_1, klein_edit_dataset_control_2"
    prompt["4"]["inputs"]["control_folder"] = f"{first.name}, {second.name}"
    prompt["1"]["inputs"]["unet_name"] = files["klein"]
    prompt["2"]["inputs"]["clip_name"] = files["qwen3"]
    prompt["3"]["inputs"]["vae_name"] = files["flux2_vae"]
    for node in ("21", "24"):
        prompt[node]["inputs"]["image"] = "wf_klein_edit_example.png"
    executor, _ = harness.run(prompt)
    assert executor.success, harness.error_message(executor)
    out = executor.history_result["outputs"]
    assert out["8"]["checkpoints"] == [2, 4] and out["8"]["encoded"][0]["images"] == 9   # 3 targets x (1 + 2)
    import folder_paths
    grid_file = out["8"]["images"][1]
    grid = Image.open(Path(folder_paths.get_directory_by_type(grid_file["type"])) / grid_file["subfolder"]
                      / grid_file["filename"])
    assert grid.size[0] - 110 == 3 * (grid.size[1] // 2)   # each checkpoint's row: reference 1 | reference 2 | sample
    assert out["9"]["text"][0].startswith("Saved flux_lora/wf_klein_edit_000004steps_")
    assert out.get("20", {}).get("images")
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage() or "NOT LOADED" in r.getMessage()]


@pytest.mark.parametrize("family,name", [("klein", "flux_lora_klein"), ("flux2_dev", "flux_lora_klein"),
                                         ("chroma", "flux_lora_chroma")])
def test_family_workflow_trains_and_samples_with_the_lora(comfy, family, name, caplog):
    """The bundled FLUX.2 [klein] / Chroma workflows (the klein one also with FLUX.2 [dev] and its Mistral text encoder
    swapped in): the model's own CLIPLoader type and VAE, training with checkpoint samples, and the saved LoRA in stock
    LoraLoaderModelOnly -> KSampler with CFG (no key left unloaded)."""
    files = comfy["names"]["families"]
    if family not in files:
        pytest.skip("this ComfyUI has no FLUX.2 [klein] text encoder (Qwen3 arrived after v0.8.0)")
    folder = photo_folder.write_photo_folder(comfy["root"] / "input" / f"wf_{family}")
    prompt = workflow_swaps.tiny_api(load_api(name), folder.name, f"flux_lora/wf_{family}")
    prompt["1"]["inputs"]["unet_name"] = files[family]
    prompt["2"]["inputs"]["clip_name"] = files[{"klein": "qwen3", "flux2_dev": "mistral3", "chroma": "t5"}[family]]
    prompt["3"]["inputs"]["vae_name"] = files["vae" if family == "chroma" else "flux2_vae"]
    executor, _ = harness.run(prompt)
    assert executor.success, harness.error_message(executor)
    out = executor.history_result["outputs"]
    assert out["8"]["checkpoints"] == [2, 4]
    assert out.get("20", {}).get("images")
    assert out["9"]["text"][0].startswith(f"Saved flux_lora/wf_{family}_000004steps_")
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage() or "NOT LOADED" in r.getMessage()]


def test_slider_workflow_trains_from_prompts_and_samples_a_strength_strip(comfy, caplog):
    """The bundled slider workflow: no dataset (the target prompt's images are rendered once and kept), checkpoint
    samples at strength -1 | 0 | +1 per prompt, and the saved slider LoRA in stock LoraLoaderModelOnly at strength -1
    (no key left unloaded). A second run renders nothing again."""
    from PIL import Image
    prompt = workflow_swaps.tiny_api(load_api("flux_lora_slider"), "", "flux_lora/wf_slider")
    executor, _ = harness.run(prompt)
    assert executor.success, harness.error_message(executor)
    out = executor.history_result["outputs"]
    assert out["8"]["checkpoints"] == [2, 4]
    import folder_paths
    grid_file = out["8"]["images"][1]
    grid = Image.open(Path(folder_paths.get_directory_by_type(grid_file["type"])) / grid_file["subfolder"]
                      / grid_file["filename"])
    assert grid.size == (110 + 6 * 256, 2 * 256)   # label + 2 prompts x 3 strengths, one row per checkpoint
    assert out["9"]["text"][0].startswith("Saved flux_lora/wf_slider_000004steps_")
    assert out.get("20", {}).get("images")
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage() or "NOT LOADED" in r.getMessage()]
    cached = sorted((comfy["root"] / "user").rglob("class_images/*/*.png"))
    assert len(cached) >= 2
    prompt["8"]["inputs"]["learning_rate"] = 0.004   # (another run, not ComfyUI's cached outputs)
    again, _ = harness.run(prompt)
    assert again.success, harness.error_message(again)
    assert sorted((comfy["root"] / "user").rglob("class_images/*/*.png")) == cached


@pytest.mark.parametrize("name", sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json")))
def test_api_workflows_set_every_widget_of_the_packs_nodes(comfy, name):
    """A setting added to a node shows up in its bundled workflows too (the drag-and-drop file, which the frontend
    writes from the API file, would otherwise disagree with it)."""
    import nodes
    for node_id, node in load_api(name).items():
        if not node["class_type"].startswith("FluxLoRA_"):
            continue
        schema = nodes.NODE_CLASS_MAPPINGS[node["class_type"]].define_schema()
        widgets = {i.id for i in schema.inputs if i.get_io_type() in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")}
        assert widgets <= set(node["inputs"]), (node_id, node["class_type"], sorted(widgets - set(node["inputs"])))


def test_the_train_node_is_found_by_what_users_search_for(comfy):
    """'lora trainer' / 'train lora flux' find Flux LoRA Train in the node search (object_info's search_aliases), on a
    ComfyUI whose node schema has them (not v0.8.0)."""
    import dataclasses

    import nodes
    from comfy_api.latest import io
    if "search_aliases" not in {f.name for f in dataclasses.fields(io.Schema)}:
        pytest.skip("this ComfyUI's node schema has no search aliases")
    info = nodes.NODE_CLASS_MAPPINGS["FluxLoRA_Train"].GET_NODE_INFO_V1()
    assert {"lora trainer", "train lora flux"} <= set(info["search_aliases"]), info.get("search_aliases")
