import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_env  # noqa: E402

comfy_env.boot()  # the real ComfyUI on sys.path before any test module imports comfy.*


@pytest.fixture(scope="session")
def comfy(tmp_path_factory):
    import harness
    return harness.setup(tmp_path_factory.mktemp("comfy"))


@pytest.fixture(scope="session")
def pack(comfy):
    return comfy_env.import_pack(comfy["root"])


@pytest.fixture(scope="session")
def captioners(comfy):
    """Tiny random Florence-2 and Qwen2.5-VL model folders in a registered models/captioners folder."""
    import folder_paths
    import tiny_captioners
    root = comfy["root"] / "models" / "captioners"
    tiny_captioners.write_tiny_florence2(root / "tiny-florence2")
    tiny_captioners.write_tiny_qwen25vl(root / "tiny-qwen25vl")
    tiny_captioners.allow_qwen_processor_without_torchvision()  # tests only: no CPU torchvision wheel exists
    folder_paths.add_model_folder_path("captioners", str(root), is_default=True)
    return root
