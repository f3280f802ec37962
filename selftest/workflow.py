"""The bundled default workflow (workflows/api/flux_lora_trainer.json), turned into a run of seconds on the tiny
models: the same nodes and wiring, with the tiny model files, the generated photo set, a few steps at small sizes, and
a second copy of its final sampling chain without the LoRA, so that the run can show the LoRA changed the sample."""
import json
from pathlib import Path

from . import PACK_DIR

DEFAULT_WORKFLOW = PACK_DIR / "workflows" / "api" / "flux_lora_trainer.json"
STEPS, SAMPLE_EVERY = 4, 2          # checkpoint samples at steps 2 and 4
WITH_LORA, WITHOUT_LORA = "fluxlora_smoke/with_lora", "fluxlora_smoke/without_lora"

# Widget values swapped in, by node class (only values, never links; everything else stays as the workflow has it).
# weight_dtype 'default': the tiny model's own float32 (fp8 weights are what the workflow picks for a 24 GB card).
TINY_VALUES = {
    "UNETLoader": {"unet_name": "tiny_flux.safetensors", "weight_dtype": "default"},
    "DualCLIPLoader": {"clip_name1": "tiny_clip_l.safetensors", "clip_name2": "tiny_t5.safetensors"},
    "VAELoader": {"vae_name": "tiny_flux_taesd.safetensors"},
    "FluxLoRA_DatasetLoader": {"resolution": "512"},
    "FluxLoRA_TestSampler": {"width": 256, "height": 256, "steps": 2, "every_n_steps": SAMPLE_EVERY},
    "FluxLoRA_Train": {"steps": STEPS, "learning_rate": 0.005},   # a tiny model needs a large step to show a change
    "ModelSamplingFlux": {"width": 256, "height": 256},
    "EmptySD3LatentImage": {"width": 256, "height": 256},
    "KSampler": {"steps": 2},
}


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def _swap_values(prompt: dict, folder: str) -> dict:
    out = {}
    for node_id, node in prompt.items():
        inputs = dict(node["inputs"])
        for name, value in TINY_VALUES.get(node["class_type"], {}).items():
            if name in inputs and not _is_link(inputs[name]):
                inputs[name] = value
        if node["class_type"] == "FluxLoRA_DatasetLoader":
            inputs["folder"] = folder
        out[node_id] = {**node, "inputs": inputs}
    return out


def _only(prompt: dict, class_type: str) -> str:
    found = [i for i, n in prompt.items() if n["class_type"] == class_type]
    if len(found) != 1:
        raise ValueError(f"{DEFAULT_WORKFLOW.name} should have one {class_type} node, has {len(found)}")
    return found[0]


def _downstream(prompt: dict, start: str) -> list:
    """Ids of the nodes that depend on ``start``'s outputs, directly or not, in prompt order."""
    reached = {start}
    changed = True
    while changed:
        changed = False
        for node_id, node in prompt.items():
            if node_id not in reached and any(_is_link(v) and v[0] in reached for v in node["inputs"].values()):
                reached.add(node_id)
                changed = True
    return [i for i in prompt if i in reached and i != start]


def _without_lora_copy(prompt: dict, loader: str) -> dict:
    """Copies of the nodes after the LoRA loader, reading the loader's own input model instead (same seed, prompt
    and sizes): the sample the workflow would make without the LoRA."""
    chain = _downstream(prompt, loader)
    new_id = {i: f"{i}_without_lora" for i in chain}
    base_model = prompt[loader]["inputs"]["model"]
    copies = {}
    for node_id in chain:
        inputs = {}
        for name, value in prompt[node_id]["inputs"].items():
            if _is_link(value) and value[0] == loader:
                value = list(base_model)
            elif _is_link(value) and value[0] in new_id:
                value = [new_id[value[0]], value[1]]
            inputs[name] = value
        copies[new_id[node_id]] = {**prompt[node_id], "inputs": inputs}
    return copies


def default_workflow(workflow: Path = DEFAULT_WORKFLOW) -> dict:
    return json.loads(Path(workflow).read_text(encoding="utf-8"))


def default_training(prompt: dict) -> tuple:
    """(preset, rank, resolution) the bundled workflow trains with, as it ships: what a user's first real run uses."""
    train = prompt[_only(prompt, "FluxLoRA_Train")]["inputs"]
    dataset = prompt[_only(prompt, "FluxLoRA_DatasetLoader")]["inputs"]
    return train["preset"], int(train["rank"]), int(dataset["resolution"])


def smoke_prompt(folder: str, workflow: Path = DEFAULT_WORKFLOW) -> tuple:
    """(API prompt, node ids) for a photo folder in ComfyUI's input folder. The ids: "train" (Flux LoRA Train),
    "save" (Save Flux LoRA), "with_lora" / "without_lora" (the SaveImage of the final sample and of its copy without
    the LoRA). Raises ValueError if the workflow no longer has the shape this run checks (one trainer, one saver, one
    LoRA loader, one SaveImage after it)."""
    prompt = _swap_values(default_workflow(workflow), folder)
    loader = _only(prompt, "LoraLoaderModelOnly")
    saves = [i for i in _downstream(prompt, loader) if prompt[i]["class_type"] == "SaveImage"]
    if len(saves) != 1:
        raise ValueError(f"{Path(workflow).name} should save one image sampled with the LoRA, saves {len(saves)}")
    prompt.update(_without_lora_copy(prompt, loader))
    ids = {"train": _only(prompt, "FluxLoRA_Train"), "save": _only(prompt, "FluxLoRA_SaveLoRA"),
           "with_lora": saves[0], "without_lora": f"{saves[0]}_without_lora"}
    prompt[ids["with_lora"]]["inputs"]["filename_prefix"] = WITH_LORA
    prompt[ids["without_lora"]]["inputs"]["filename_prefix"] = WITHOUT_LORA
    return prompt, ids
