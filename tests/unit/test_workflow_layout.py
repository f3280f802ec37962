"""The bundled drag-and-drop workflows as saved: no node covers another (title bars included), and image previews are
large enough to read a loss curve. (Their sizes are the rendered ones: tests/tools/make_ui_workflows.py.)"""
import json
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
TITLE = 30   # the frontend draws a node's title bar above its pos


def _boxes(workflow):
    return [(n["id"], n["type"], n["pos"][0], n["pos"][1] - TITLE, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
            for n in workflow["nodes"]]


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.json")), ids=lambda p: p.stem)
def test_no_node_covers_another(path):
    boxes = _boxes(json.loads(path.read_text()))
    overlapping = [(a[:2], b[:2]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                   if a[2] < b[4] and b[2] < a[4] and a[3] < b[5] and b[3] < a[5]]
    assert not overlapping, overlapping


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.json")), ids=lambda p: p.stem)
def test_image_previews_are_readable(path):
    small = [(n["id"], n["size"]) for n in json.loads(path.read_text())["nodes"]
             if n["type"] in ("PreviewImage", "SaveImage") and min(n["size"]) < 400]
    assert not small, small
