"""The real server (the ComfyUI under test, --cpu) + official frontend in headless Chromium: the bundled UI workflow loads with no
missing nodes, equals the API file, runs with tiny models, and the node shows the live loss chart and checkpoint
samples (also after a page reload). The API workflow is queued over HTTP and checked in /history."""
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

import browser
import workflow_swaps

pytestmark = pytest.mark.browser
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
DOCS = Path(__file__).resolve().parents[2] / "docs"
SUPPORT = Path(__file__).resolve().parents[1] / "support"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not browser.available():
        pytest.fail("The browser tests need Debian's chromium and playwright: run tests/setup_env.sh "
                    "(or deselect them with -m 'not browser').")
    root = tmp_path_factory.mktemp("frontend")
    browser.prepare_root(root)
    with browser.comfyui_server(root) as url:
        yield url, root


def _get(url):
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


def _wait_history(url, prompt_id, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        h = _get(f"{url}/history/{prompt_id}")
        if prompt_id in h and h[prompt_id].get("status", {}).get("completed") is not None:
            return h[prompt_id]
        time.sleep(1)
    raise AssertionError("prompt did not finish")


@pytest.mark.skipif(not os.environ.get("FLUXLORA_FRONTEND_ROOT"), reason="the frontend ComfyUI pins is under test")
def test_the_server_serves_the_frontend_asked_for(server):
    """FLUXLORA_FRONTEND_ROOT (.ci/run: the newest comfyui-frontend-package) is the frontend these tests drive."""
    url, _ = server
    served = urllib.request.urlopen(url + "/", timeout=10).read()
    assert served == (Path(os.environ["FLUXLORA_FRONTEND_ROOT"]) / "index.html").read_bytes()


def test_templates_route_lists_the_workflows(server):
    url, _ = server
    templates = _get(f"{url}/workflow_templates")
    assert sorted(templates["comfyui_fluxlora"]) == ["flux_lora_chroma", "flux_lora_compare", "flux_lora_klein",
                                                     "flux_lora_klein_edit", "flux_lora_kontext",
                                                     "flux_lora_merge", "flux_lora_slider", "flux_lora_trainer",
                                                     "flux_lora_trainer_captioned_folder"]


@pytest.mark.parametrize("name", ["flux_lora_trainer_captioned_folder", "flux_lora_merge", "flux_lora_kontext",
                                  "flux_lora_klein", "flux_lora_chroma", "flux_lora_slider",
                                  "flux_lora_compare", "flux_lora_klein_edit"])
def test_ui_workflow_equals_its_api_file(server, name):
    url, _ = server
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    with browser.browser_page(url) as page:
        page.evaluate("async ([g, n]) => { await app.loadGraphData(g, true, true, n); }", [ui, name])
        page.wait_for_timeout(500)
        assert page.evaluate("() => app.graph.nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type)") == []
        prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
        assert not page.errors, page.errors
    assert {k: (v["class_type"], v["inputs"]) for k, v in prompt.items()} == \
        {k: (v["class_type"], v["inputs"]) for k, v in api.items()}


SWAP_JS = """
({values, folder, prefix}) => {
  for (const node of app.graph.nodes) {
    const want = {...(values[node.type] ?? {})};
    if (node.type === "FluxLoRA_DatasetLoader") want.folder = folder;
    if (node.type === "FluxLoRA_SaveLoRA") want.filename_prefix = prefix;
    for (const w of node.widgets ?? []) if (w.name in want) w.value = want[w.name];
  }
}
"""


def test_ui_workflow_in_the_browser(server):
    url, root = server
    ui = json.loads((WORKFLOWS / "flux_lora_trainer.json").read_text())
    api = json.loads((WORKFLOWS / "api" / "flux_lora_trainer.json").read_text())
    with browser.browser_page(url) as page:
        page.evaluate("async (g) => { await app.loadGraphData(g, true, true, 'flux_lora_trainer'); }", ui)
        page.wait_for_timeout(500)
        missing = page.evaluate("() => app.graph.nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type)")
        assert missing == []
        prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
        assert sorted(prompt) == sorted(api)
        diff = {k: ({n: (prompt[k]["inputs"].get(n), api[k]["inputs"].get(n))
                     for n in set(prompt[k]["inputs"]) | set(api[k]["inputs"]) if prompt[k]["inputs"].get(n) != api[k]["inputs"].get(n)},
                    prompt[k]["class_type"], api[k]["class_type"]) for k in api}
        diff = {k: v for k, v in diff.items() if v[0] or v[1] != v[2]}
        assert not diff, f"UI and API workflow files disagree: {diff}"
        assert not page.errors, page.errors
        alerts = page.evaluate("() => [...document.querySelectorAll('.p-toast-message, [role=alert]')].map(e => e.innerText)")
        assert not [a for a in alerts if "Invalid workflow" in a or "missing" in a.lower()], alerts

        # picking a preset fills steps / learning rate / rank on the node
        picked = page.evaluate("""() => { const n = app.graph.getNodeById(8); const w = n.widgets.find(x => x.name === 'preset');
            w.value = 'fast test'; w.callback(w.value);
            const v = Object.fromEntries(n.widgets.map(x => [x.name, x.value]));
            return [v.steps, v.learning_rate, v.rank]; }""")
        assert picked == [250, 0.0004, 8], picked
        # Advanced Settings shows what its 'preset' values resolve to under the train node's preset
        labels = page.evaluate("""() => { window.__fluxlora_annotate(); const n = app.graph.getNodeById(21);
            const w = n.widgets.find(x => x.name === 'warmup_steps'); w.value = 7; window.__fluxlora_annotate();
            return Object.fromEntries(n.widgets.map(x => [x.name, x.label ?? null])); }""")
        assert labels["alpha"].startswith("alpha = ") and labels["alpha"].endswith(" (fast test)"), labels
        assert labels["optimizer"].startswith("optimizer = ") and labels["warmup_steps"] is None, labels
        page.evaluate("() => { app.graph.getNodeById(21).widgets.find(x => x.name === 'warmup_steps').value = -1; }")

        values = {**workflow_swaps.TINY_VALUES, "FluxLoRA_AdvancedSettings": {"validation_images": 1, "validation_every": 2}}
        page.evaluate(SWAP_JS, {"values": values, "folder": "photos", "prefix": "flux_lora/browser"})
        page.evaluate("async () => { await app.queuePrompt(0); }")
        page.wait_for_timeout(1000)
        queue = _get(f"{url}/queue")
        running = queue["queue_running"] + queue["queue_pending"]
        prompt_id = running[0][1] if running else list(_get(f"{url}/history"))[-1]
        result = _wait_history(url, prompt_id)
        assert result["status"]["status_str"] == "success", result["status"]
        outputs = result["outputs"]
        assert outputs["8"]["checkpoints"] == [2, 4] and outputs["20"]["images"]

        page.wait_for_timeout(1000)
        # the dataset, caption, trigger and save reports are shown on their nodes (not only in /history)
        reports = page.evaluate("""() => Object.fromEntries(['4', '5', '6', '9'].map(id => [id, app.graph.getNodeById(
            Number(id)).widgets.find(w => w.name === 'fluxlora_report').element.querySelector('textarea').value]))""")
        assert reports["9"].startswith("Saved flux_lora/browser_") and "MB)" in reports["9"], reports
        assert " images from " in reports["4"] and reports["5"].startswith("captioned "), reports
        assert "trigger word: " in reports["6"], reports
        run = page.evaluate("() => { const r = window.__fluxlora.runs.get('8'); return r && {loss: r.loss.length, samples: r.samples.length, val: r.validation.length, done: r.done}; }")
        assert run == {"loss": 4, "samples": 2, "val": 2, "done": True}
        drawn = page.evaluate("""() => { const w = app.graph.getNodeById(8).widgets.find(x => x.name === 'fluxlora_chart');
            return {legend: w.element.querySelector('.fluxlora-legend').textContent,
                    info: w.element.querySelector('.fluxlora-info').textContent,
                    strip: w.element.querySelectorAll('.fluxlora-strip img').length}; }""")
        assert drawn["legend"] == "lossaveragelearning ratevalidationcheckpoint", drawn
        assert drawn["info"].startswith("step 4/4 · loss ") and " · val " in drawn["info"] and drawn["strip"] == 2, drawn
        page.evaluate("""() => { const n = app.graph.getNodeById(8); app.canvas.ds.scale = 0.8;
                                   app.canvas.ds.offset = [-n.pos[0] + 420, -n.pos[1] + 160]; app.canvas.setDirty(true, true); }""")
        page.wait_for_timeout(800)
        page.screenshot(path=str(root / "train_node.png"))
        if os.environ.get("FLUXLORA_UPDATE_DOCS"):  # refresh the README screenshot
            page.screenshot(path=str(DOCS / "screenshot_train_node.png"))

        page.reload()
        page.wait_for_function("() => window.app && window.app.graph && window.__fluxlora", timeout=120000)
        page.wait_for_timeout(2000)
        rebuilt = page.evaluate("() => { const r = window.__fluxlora.runs.get('8'); return r && {loss: r.loss.length, samples: r.samples.length, val: r.validation.length}; }")
        assert rebuilt == {"loss": 4, "samples": 2, "val": 2}, "the chart history survives a page reload"
        # a run that ends early says so where the ETA was (the server's fluxlora.stopped event, replayed here)
        stopped = page.evaluate("""() => { const api = window.comfyAPI?.api?.api ?? app.api;
            api.dispatchEvent(new CustomEvent('fluxlora.stopped', {detail: {node: '8', text: 'cancelled at step 4'}}));
            return app.graph.getNodeById(8).widgets.find(x => x.name === 'fluxlora_chart')
                .element.querySelector('.fluxlora-info').textContent; }""")
        assert stopped.endswith(" · cancelled at step 4"), stopped
        # the run belongs to this workflow (also after the reload); another workflow's train node (the same id 8) shows
        # no chart of it
        ids = page.evaluate("() => [window.__fluxlora.runs.get('8').workflow ?? null, app.rootGraph?.id ?? app.graph?.id]")
        assert ids[0] and ids[0] == ids[1], ids
        klein = json.loads((WORKFLOWS / "flux_lora_klein.json").read_text())
        page.evaluate("async (g) => { await app.loadGraphData(g, true, true, 'flux_lora_klein'); }", klein)
        page.wait_for_timeout(800)
        other = page.evaluate("""() => app.graph.getNodeById(8).widgets.find(x => x.name === 'fluxlora_chart')
            .element.querySelector('.fluxlora-info').textContent""")
        assert not other.startswith("step "), other


def test_workflow_saved_with_the_first_node_layout_is_migrated(server):
    """A workflow saved before the settings moved (22 widgets on Flux LoRA Train, 'repeats' on Dataset Loader) loads
    with the same training: the old values land on a new, connected Advanced Settings node; and it runs."""
    url, _ = server
    old = json.loads((SUPPORT / "data" / "flux_lora_trainer_first_layout.json").read_text())
    with browser.browser_page(url) as page:
        page.evaluate("async (g) => { await app.loadGraphData(g, true, true, 'old_layout'); }", old)
        page.wait_for_timeout(500)
        prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
        assert not page.errors, page.errors
    train = prompt["8"]["inputs"]
    assert {k: v for k, v in train.items() if not isinstance(v, list)} == {
        "preset": "balanced", "steps": 2000, "learning_rate": 0.0002, "rank": 16, "seed": 0, "resume": "off"}
    assert train["dataset"] == ["6", 0] and train["sample_settings"] == ["7", 0] and train["model"] == ["1", 0]
    advanced = prompt[train["advanced"][0]]
    assert advanced["class_type"] == "FluxLoRA_AdvancedSettings"
    old = {"alpha": 16, "optimizer": "adamw8bit", "scheduler": "constant", "warmup_steps": 100, "batch_size": 1,
           "grad_accumulation": 1, "max_grad_norm": 1, "sigma_sampling": "sigmoid", "sigma_shift": 3.1582,
           "loss_weighting": "none", "caption_dropout": 0.05, "train_guidance": 1, "gradient_checkpointing": "on",
           "targets": "all linear", "blocks": "all", "lora_dropout": 0, "use_dora": "off"}
    assert {k: v for k, v in advanced["inputs"].items() if k in old} == old  # every old value, on the new node
    assert all(v in ("preset", -1, "") for k, v in advanced["inputs"].items() if k not in old)  # the rest: the preset's
    assert "repeats" not in prompt["4"]["inputs"]
    advanced["inputs"]["warmup_steps"] = 0  # the tiny run has 4 steps
    api = workflow_swaps.tiny_api(prompt, "photos", "flux_lora/migrated")
    result = _post_and_wait(url, api)
    assert result["status"]["status_str"] == "success", result["status"]
    assert result["outputs"]["8"]["checkpoints"] == [2, 4]


def _post_and_wait(url, api):
    req = urllib.request.Request(f"{url}/prompt", data=json.dumps({"prompt": api}).encode(),
                                 headers={"Content-Type": "application/json"})
    return _wait_history(url, json.loads(urllib.request.urlopen(req, timeout=30).read())["prompt_id"])


def test_api_workflow_over_http(server):
    url, _ = server
    api = workflow_swaps.tiny_api(json.loads((WORKFLOWS / "api" / "flux_lora_trainer_captioned_folder.json").read_text()),
                                  "photos", "flux_lora/http")
    req = urllib.request.Request(f"{url}/prompt", data=json.dumps({"prompt": api}).encode(),
                                 headers={"Content-Type": "application/json"})
    prompt_id = json.loads(urllib.request.urlopen(req, timeout=30).read())["prompt_id"]
    result = _wait_history(url, prompt_id)
    assert result["status"]["status_str"] == "success", result["status"]
    assert result["outputs"]["8"]["checkpoints"] == [2, 4]
    assert result["outputs"]["9"]["text"][0].startswith("Saved flux_lora/http_000004steps_")
    assert result["outputs"]["20"]["images"]


def test_chart_survives_a_reload_mid_run(server):
    url, _ = server
    api = workflow_swaps.tiny_api(json.loads((WORKFLOWS / "api" / "flux_lora_trainer_captioned_folder.json").read_text()),
                                  "photos", "flux_lora/midrun")
    api["8"]["inputs"]["steps"] = 40
    del api["8"]["inputs"]["sample_settings"]
    with browser.browser_page(url) as page:
        req = urllib.request.Request(f"{url}/prompt", data=json.dumps({"prompt": api}).encode(),
                                     headers={"Content-Type": "application/json"})
        prompt_id = json.loads(urllib.request.urlopen(req, timeout=30).read())["prompt_id"]
        page.wait_for_function("() => (window.__fluxlora.runs.get('8')?.loss.length ?? 0) >= 5", timeout=240000)
        page.reload()
        page.wait_for_function("() => window.app && window.app.graph && window.__fluxlora", timeout=120000)
        page.wait_for_function("() => (window.__fluxlora.runs.get('8')?.loss.length ?? 0) >= 5", timeout=60000)
        result = _wait_history(url, prompt_id)
        assert result["status"]["status_str"] == "success", result["status"]
        page.wait_for_function("() => window.__fluxlora.runs.get('8')?.done === true", timeout=60000)
        final = page.evaluate("() => window.__fluxlora.runs.get('8').steps")
        assert final == list(range(1, 41)), final  # rebuilt history + live events after the reload, no gaps or repeats
