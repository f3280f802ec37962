"""Flux LoRA Compare Checkpoints in ComfyUI's executor: a run's checkpoints rendered side by side equal what stock
LoraLoaderModelOnly + the Test Sampler give for each checkpoint file; the chosen checkpoint's name loads in stock
LoraLoader; wrong steps, strengths and a run of another model family are refused before anything is rendered."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import graphs
import harness
import images
import workflow_swaps

LABEL = 110       # trainer/sampling.labelled_grid's label column
SIZE = 256        # the samples' width and height (Test Sampler's smallest)
PROMPTS = "tok_test a red thing\ntok_test on a beach"


@pytest.fixture(scope="module")
def run(comfy):
    """A 4-step run with checkpoints at steps 2 and 4."""
    before = set(comfy["runs"].glob("*"))
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=4, prefix="flux_lora/compare",
                              save_every=2, learning_rate=2e-2)
    executor, _ = harness.run(g)
    assert executor.success, harness.error_message(executor)
    (folder,) = set(comfy["runs"].glob("*")) - before
    return folder


def _loaders(names, unet=None, clip=None):
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": unet or names["unet"], "weight_dtype": "default"}},
        "clip": clip or {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": names["clip_l"],
                                                                   "clip_name2": names["t5"], "type": "flux"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": names["vae"]}},
        "sampler": {"class_type": "FluxLoRA_TestSampler", "inputs": {
            "prompts": PROMPTS, "trigger": "", "width": SIZE, "height": SIZE, "steps": 2, "guidance": 3.5, "seed": 7,
            "every_n_steps": 2}},
    }


def _compare_graph(names, run_name, checkpoints="all", strengths="1.0", output_step=0, **loaders):
    g = _loaders(names, **loaders)
    g["compare"] = {"class_type": "FluxLoRA_CompareCheckpoints", "inputs": {
        "model": ["unet", 0], "clip": ["clip", 0], "vae": ["vae", 0], "run": run_name,
        "sample_settings": ["sampler", 0], "checkpoints": checkpoints, "strengths": strengths,
        "output_step": output_step}}
    return g


def _image(out):
    import folder_paths
    entry = out["images"][0]
    path = folder_paths.get_directory_by_type(entry["type"])
    return np.asarray(Image.open(f"{path}/{entry['subfolder']}/{entry['filename']}"), dtype=np.int16)


def _cells(grid, row):
    return grid[row * SIZE:(row + 1) * SIZE, LABEL:]


def test_the_grid_is_each_checkpoint_through_stock_lora_loader(comfy, run):
    g = _compare_graph(comfy["names"], run.name, strengths="0, 1.0", output_step=2)
    # the same prompts through the Test Sampler with the model alone and with each checkpoint file in stock
    # LoraLoaderModelOnly: what a user who loaded the file by hand would see
    for tag, step in (("base", None), ("s2", 2), ("s4", 4)):
        model = ["unet", 0]
        if step is not None:
            g[f"{tag}_lora"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
                "model": model, "strength_model": 1.0,
                "lora_name": f"fluxlora_runs/{run.name}/{run.name}_step{step:06d}.safetensors"}}
            model = [f"{tag}_lora", 0]
        g[f"{tag}_render"] = {"class_type": "FluxLoRA_TestSampler", "inputs": {
            **g["sampler"]["inputs"], "model": model, "clip": ["clip", 0], "vae": ["vae", 0]}}
    g["chosen"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["unet", 0], "lora_name": ["compare", 1],
                                                                   "strength_model": 1.0}}
    graphs.add_sampling(g, ["chosen", 0], tag="c")
    executor, _ = harness.run(g)
    assert executor.success, harness.error_message(executor)
    out = executor.history_result["outputs"]
    grid = _image(out["compare"])
    assert grid.shape[:2] == (3 * SIZE, LABEL + 2 * SIZE)   # base + 2 checkpoints, 2 prompts
    for row, tag in enumerate(("base", "s2", "s4")):
        stock = _image(out[f"{tag}_render"])
        assert stock.shape[:2] == (SIZE, LABEL + 2 * SIZE)
        assert np.abs(_cells(grid, row) - stock[:, LABEL:]).max() <= 1, tag   # (PNG rounding)
    assert np.abs(_cells(grid, 1) - _cells(grid, 2)).mean() > 1   # the checkpoints differ
    assert np.abs(_cells(grid, 0) - _cells(grid, 2)).mean() > 1   # and the LoRA does something
    assert out["c_out"]["images"]   # lora_name (step 2) loaded by the stock loader and sampled


def test_the_bundled_compare_workflow(comfy, run, caplog):
    """workflows/api/flux_lora_compare.json on the newest run ('latest'): the grid, and the last checkpoint's name
    through stock LoraLoaderModelOnly into a KSampler graph (no key left unloaded)."""
    path = Path(__file__).resolve().parents[2] / "workflows" / "api" / "flux_lora_compare.json"
    prompt = workflow_swaps.tiny_api(json.loads(path.read_text()), "", "")
    assert prompt["8"]["inputs"]["run"] == "latest"
    prompt["8"]["inputs"]["run"] = run.name   # (other tests' runs may be newer)
    executor, _ = harness.run(prompt)
    assert executor.success, harness.error_message(executor)
    out = executor.history_result["outputs"]
    assert _image(out["9"]).shape[:2] == (2 * SIZE, LABEL + 2 * SIZE)   # steps 2 and 4, two prompts
    assert out["20"]["images"]
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage() or "NOT LOADED" in r.getMessage()]


def test_a_subset_of_checkpoints_and_strengths(comfy, run):
    executor, _ = harness.run(_compare_graph(comfy["names"], run.name, checkpoints="4", strengths="0.5, 1"))
    assert executor.success, harness.error_message(executor)
    grid = _image(executor.history_result["outputs"]["compare"])
    assert grid.shape[:2] == (2 * SIZE, LABEL + 2 * SIZE)   # step 4 at 0.5 and at 1.0
    assert np.abs(_cells(grid, 0) - _cells(grid, 1)).mean() > 0.5


@pytest.mark.parametrize("inputs,message", [
    ({"checkpoints": "3"}, "this run has no checkpoint at step 3; it has steps 2, 4"),
    ({"checkpoints": "last x"}, "write 'last' and a number"),
    ({"strengths": "1, strong"}, "'strong' is not a number"),
    ({"output_step": 3}, "output_step 3 is not one of the compared checkpoints (steps 2, 4)"),
])
def test_wrong_choices_are_refused_before_rendering(comfy, run, inputs, message, caplog):
    executor, _ = harness.run(_compare_graph(comfy["names"], run.name, **inputs))
    assert message in (harness.error_message(executor) or "")
    assert not [r for r in caplog.records if "compare:" in r.getMessage()]   # no row was rendered


def test_a_run_of_another_model_family_is_refused(comfy, run, caplog):
    files = comfy["names"]["families"]
    clip = {"class_type": "CLIPLoader", "inputs": {"clip_name": files["t5"], "type": "chroma"}}
    executor, _ = harness.run(_compare_graph(comfy["names"], run.name, unet=files["chroma"], clip=clip))
    message = harness.error_message(executor) or ""
    assert "was trained for flux-1-dev, but this MODEL is Chroma" in message, message
    assert not [r for r in caplog.records if "compare:" in r.getMessage()]


def test_new_checkpoints_change_the_fingerprint(comfy, run, pack_nodes, tmp_path):
    """ComfyUI re-runs the node (instead of reusing its cached grid) once the run has saved another checkpoint."""
    node = pack_nodes.compare.CompareCheckpoints
    before = node.fingerprint_inputs(run=run.name, checkpoints="all")
    extra = run / f"{run.name}_step000006.safetensors"
    extra.write_bytes((run / f"{run.name}_step000004.safetensors").read_bytes())
    try:
        assert node.fingerprint_inputs(run=run.name, checkpoints="all") != before
    finally:
        extra.unlink()
    assert node.fingerprint_inputs(run=run.name, checkpoints="all") == before


def test_the_node_says_which_row_it_renders(comfy, run, monkeypatch):
    import server

    class TextServer(harness.FakeServer):
        def __init__(self):
            super().__init__()
            self.texts = []

        def send_progress_text(self, text, node_id, sid=None):
            self.texts.append((node_id, text))

    fake = TextServer()
    monkeypatch.setattr(server.PromptServer, "instance", fake, raising=False)
    executor, _ = harness.run(_compare_graph(comfy["names"], run.name, strengths="0, 1"))
    assert executor.success, harness.error_message(executor)
    assert fake.texts[:3] == [("compare", f"{run.name}: base model (1/3)"), ("compare", f"{run.name}: step 2 x1 (2/3)"),
                              ("compare", f"{run.name}: step 4 x1 (3/3)")]
    assert fake.texts[-1][1].endswith(f"lora_name: fluxlora_runs/{run.name}/{run.name}_step000004.safetensors (step 4)")
