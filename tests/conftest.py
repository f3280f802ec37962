"""Shared fixtures. Test folders: unit/ (no model), core/ (the trainer on tiny models), graph/ (ComfyUI's executor),
browser/ (the real server + frontend in headless Chromium; marker 'browser'). Helpers live in support/."""
import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
import comfy_env  # noqa: E402

comfy_env.boot()  # the real ComfyUI on sys.path before any test module imports comfy.*


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    """ComfyUI booted with tiny model files and this pack loaded as a custom node: {root, names, loras}."""
    import harness
    return harness.setup(tmp_path_factory.mktemp("comfy"))


@pytest.fixture(scope="session")
def pack(comfy):
    """The pack as ComfyUI loaded it (the same copy the executor runs)."""
    import harness
    return harness.loaded_pack()


class _Modules:
    def __init__(self, package):
        self._package = package

    def __getattr__(self, name):
        return importlib.import_module(f"{self._package}.{name}")


@pytest.fixture(scope="session")
def core(pack):
    """The pack's trainer modules: core.loop, core.settings, core.export, ..."""
    return _Modules(f"{pack.__name__}.trainer")


@pytest.fixture(scope="session")
def pack_nodes(pack):
    """The pack's node modules: pack_nodes.train, pack_nodes.caption, ..."""
    return _Modules(f"{pack.__name__}.nodes")


@pytest.fixture(params=["as installed", "newer stand-in"])
def flux_code(request, monkeypatch):
    """Runs the test twice: on the installed ComfyUI's Flux code, and with tests/support/newer_flux.py's stand-in for
    the Flux code of newer ComfyUI releases (modulation norms and RoPE without backward unless ComfyUI's training flag
    is set)."""
    if request.param == "newer stand-in":
        import newer_flux
        newer_flux.install(monkeypatch)
    return request.param


@pytest.fixture(scope="session")
def captioners(comfy):
    """Tiny random Florence-2, Qwen2.5-VL, Qwen3-VL and JoyCaption (LLaVA) model folders in a registered
    models/captioners folder."""
    import folder_paths
    import tiny_captioners
    root = comfy["root"] / "models" / "captioners"
    tiny_captioners.write_tiny_florence2(root / "tiny-florence2")
    tiny_captioners.write_tiny_qwen25vl(root / "tiny-qwen25vl")
    tiny_captioners.write_tiny_qwen3vl(root / "tiny-qwen3vl")
    tiny_captioners.write_tiny_joycaption(root / "tiny-joycaption")
    tiny_captioners.allow_qwen_processor_without_torchvision()  # tests only: no CPU torchvision wheel exists
    folder_paths.add_model_folder_path("captioners", str(root), is_default=True)
    return root


@pytest.fixture(autouse=True)
def every_progress_update(monkeypatch):
    """Newer ComfyUI drops progress updates less than 0.1 s apart (comfy.utils.PROGRESS_THROTTLE_MIN_INTERVAL); the
    tiny models' steps are faster than that, and tests that watch or cancel at a step need every update."""
    import comfy.utils as comfy_utils
    if hasattr(comfy_utils, "PROGRESS_THROTTLE_MIN_INTERVAL"):
        monkeypatch.setattr(comfy_utils, "PROGRESS_THROTTLE_MIN_INTERVAL", 0.0)
