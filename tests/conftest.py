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
