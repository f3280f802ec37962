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
