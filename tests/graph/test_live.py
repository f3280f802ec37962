"""Live progress for the web UI: websocket events per step and checkpoint, and the history route a reloaded
page rebuilds its chart from (the JS side is checked in the browser test of the frontend issue)."""
import asyncio
import json

import graphs
import harness
import images


class EventServer(harness.FakeServer):
    def __init__(self):
        super().__init__()
        from aiohttp import web
        self.routes = web.RouteTableDef()


def test_events_and_history(comfy, pack_nodes, monkeypatch):
    import server
    from aiohttp.test_utils import make_mocked_request
    live = pack_nodes.live
    fake = EventServer()
    monkeypatch.setattr(server.PromptServer, "instance", fake, raising=False)
    monkeypatch.setattr(live.register_routes, "done", False, raising=False)
    live.register_routes()

    import shutil
    shutil.rmtree(comfy["root"] / "user" / "fluxlora_cache", ignore_errors=True)   # a cold cache: every image encoded
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=4, prefix="flux_lora/live",
                              validation_images=1, validation_every=2)
    g["sampler"] = {"class_type": "FluxLoRA_TestSampler", "inputs": {"prompts": "a red thing", "trigger": "", "width": 256,
                    "height": 256, "steps": 1, "guidance": 3.5, "seed": 1, "every_n_steps": 2}}
    g["train"]["inputs"]["sample_settings"] = ["sampler", 0]
    executor, _ = harness.run(g)
    assert executor.success, harness.error_message(executor)

    progress = [d for e, d in fake.events if e == "fluxlora.progress"]
    assert [d["step"] for d in progress] == [1, 2, 3, 4] and all(d["node"] == "train" and d["total"] == 4 for d in progress)
    assert progress[-1]["eta_s"] == 0 and progress[0]["it_s"] > 0
    samples = [d for e, d in fake.events if e == "fluxlora.samples"]
    assert [d["step"] for d in samples] == [2, 4] and samples[0]["image"]["type"] == "temp"
    assert (comfy["root"] / "temp" / samples[0]["image"]["filename"]).is_file()
    assert ("fluxlora.done", {"node": "train"}) in fake.events
    stages = [d["text"] for e, d in fake.events if e == "fluxlora.stage"]   # before step 1: what the run is doing
    assert stages[0].startswith("encoding 4 images") and "encoding images 4/4" in stages, stages
    first_step = next(i for i, (e, _) in enumerate(fake.events) if e == "fluxlora.progress")
    assert max(i for i, (e, _) in enumerate(fake.events) if e == "fluxlora.stage") < first_step
    assert not [e for e, _ in fake.events if e == "fluxlora.stopped"]
    validation = [d for e, d in fake.events if e == "fluxlora.validation"]
    assert [d["step"] for d in validation] == [2, 4] and all(d["loss"] > 0 for d in validation)

    handler = next(r.handler for r in fake.routes if r.path == "/fluxlora/history")
    response = asyncio.run(handler(make_mocked_request("GET", "/fluxlora/history?node=train")))
    history = json.loads(response.body)
    assert history["steps"] == [1, 2, 3, 4] and len(history["loss"]) == 4 and history["done"]
    assert [s["step"] for s in history["samples"]] == [2, 4]
    assert [s for s, _ in history["validation"]] == [2, 4]

    handler = next(r.handler for r in fake.routes if r.path == "/fluxlora/presets")
    presets = json.loads(asyncio.run(handler(make_mocked_request("GET", "/fluxlora/presets"))).body)
    assert presets["fast test"]["steps"] == 250 and presets["style"]["rank"] == 32 and set(presets["balanced"]) > {"seed"}


def test_two_trainer_nodes_keep_separate_histories(comfy, pack_nodes, monkeypatch):
    import server
    live = pack_nodes.live
    fake = EventServer()
    monkeypatch.setattr(server.PromptServer, "instance", fake, raising=False)
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=2, prefix="flux_lora/two_a")
    g["train_b"] = {"class_type": "FluxLoRA_Train", "inputs": {**g["train"]["inputs"], "steps": 3, "seed": 9}}
    g["save_b"] = {"class_type": "FluxLoRA_SaveLoRA", "inputs": {**g["save"]["inputs"], "lora": ["train_b", 0],
                                                                 "filename_prefix": "flux_lora/two_b"}}
    executor, _ = harness.run(g)
    assert executor.success, harness.error_message(executor)
    steps = {}
    for event, data in fake.events:
        if event == "fluxlora.progress":
            steps.setdefault(data["node"], []).append(data["step"])
    assert steps == {"train": [1, 2], "train_b": [1, 2, 3]}
    assert live.HISTORY["train"]["steps"] == [1, 2] and live.HISTORY["train_b"]["steps"] == [1, 2, 3]


def test_a_cancelled_or_failed_run_ends_the_chart_with_what_happened(comfy, pack_nodes, monkeypatch):
    """Cancel: 'cancelled at step N · saved <checkpoint> · set resume to latest to continue' instead of a frozen ETA;
    an error: 'stopped before the first step: <its message>'."""
    import comfy.model_management as mm
    import server
    from comfy.utils import set_progress_bar_global_hook
    fake = EventServer()
    monkeypatch.setattr(server.PromptServer, "instance", fake, raising=False)
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=6, prefix="flux_lora/stopped")

    def hook(value, total, preview=None, node_id=None):
        if total == 6 and value == 3:
            raise mm.InterruptProcessingException()   # what ComfyUI's progress hook does when Cancel was pressed
    set_progress_bar_global_hook(hook)
    try:
        harness.run(g)
    finally:
        set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    (text,) = [d["text"] for e, d in fake.events if e == "fluxlora.stopped"]
    assert text.startswith("cancelled at step 3 · saved ") and text.endswith("_step000003.safetensors · set resume to "
                                                                            "latest to continue"), text
    assert pack_nodes.live.HISTORY["train"]["stopped"] == text

    fake.events.clear()
    failing = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=6, prefix="flux_lora/stopped",
                                    reference_dropout=0.3)
    executor, _ = harness.run(failing)
    assert not executor.success
    (text,) = [d["text"] for e, d in fake.events if e == "fluxlora.stopped"]
    assert text.startswith("stopped before the first step: reference_dropout is 0.3, but the dataset"), text
