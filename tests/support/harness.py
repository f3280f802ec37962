"""Runs graphs through ComfyUI's real executor with this pack loaded as a custom node (CPU, tiny models)."""
import asyncio
from pathlib import Path

import comfy_env

_STATE = {}


def _headless():
    import tiny_models  # noqa: F401  (imports the pack's selftest package by its path)
    import importlib
    return importlib.import_module("fluxlora_selftest.executor")


class FakeServer(_headless().HeadlessServer):
    """What PromptExecutor and ComfyUI's progress handler touch when no web server runs (selftest/executor.py)."""


def setup(root: Path):
    """Boots ComfyUI once per session: tiny model files, folders, the pack loaded like any custom node."""
    if _STATE:
        return _STATE
    comfy_env.boot()
    import tiny_models
    import folder_paths
    import nodes
    models = root / "models"
    names = tiny_models.write_model_files(models)
    tiny_models.install_loader_shims()
    import tiny_families
    names["families"] = tiny_families.write_family_model_files(models)
    tiny_families.install_family_shims()
    for kind in ("diffusion_models", "vae", "text_encoders", "loras"):
        (models / kind).mkdir(parents=True, exist_ok=True)
        folder_paths.add_model_folder_path(kind, str(models / kind), is_default=True)
    if "datasets" in folder_paths.folder_names_and_paths:  # ComfyUI >= 0.30: <ComfyUI>/datasets; use one under root
        (root / "datasets").mkdir(parents=True, exist_ok=True)
        folder_paths.add_model_folder_path("datasets", str(root / "datasets"), is_default=True)
    for sub, setter in (("output", folder_paths.set_output_directory), ("temp", folder_paths.set_temp_directory),
                        ("input", folder_paths.set_input_directory), ("user", folder_paths.set_user_directory)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        setter(str(root / sub))
    for kind in ("loras", "diffusion_models"):  # as ComfyUI's main.py does
        folder_paths.add_model_folder_path(kind, str(root / "output" / kind))
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))  # comfy_extras nodes
    parent = comfy_env.pack_parent(root)
    ok = asyncio.run(nodes.load_custom_node(str(parent / comfy_env.PACK_NAME)))
    assert ok, "the pack failed to load as a custom node (see log)"
    assert "FluxLoRA_Train" in nodes.NODE_CLASS_MAPPINGS
    _STATE.update(root=root, names=names, loras=models / "loras", runs=root / "output" / "loras" / "fluxlora_runs")
    return _STATE


def loaded_pack():
    """The pack as ComfyUI loaded it (the copy the executor runs), e.g. for importlib.import_module(f"{pack.__name__}.trainer.loop")."""
    import sys

    import nodes
    node_module = nodes.NODE_CLASS_MAPPINGS["FluxLoRA_Train"].__module__  # <pack>.nodes.train
    return sys.modules[node_module.rsplit(".", 2)[0]]


def run(prompt: dict):
    """Validates and executes an API-format prompt; returns (executor, server). Raises on validation errors."""
    headless = _headless()
    prompt_id, valid = headless.validate(prompt)
    if not valid[0] or valid[3]:
        raise AssertionError(f"invalid prompt: {valid[1]} {valid[3]}")
    server = FakeServer()
    return headless.run_validated(prompt, prompt_id, valid[2], server), server


def error_message(executor):
    for event, data in executor.status_messages:
        if event == "execution_error":
            return data.get("exception_message", str(data))
    return None
