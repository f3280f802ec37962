"""What ``smoke.py`` (the install self-test) builds and runs: tiny models of the real FLUX.1 / CLIP / VAE
architectures, a small generated photo set, the bundled default workflow turned into a run of seconds, and what the
memory plan would choose for full-size FLUX.1-dev.

Nothing here is imported when ComfyUI loads the pack (``__init__.py`` never touches it): the loader shims change how
the stock loaders read tiny files, which only a self-test process or the test suite may do. smoke.py
(``selftest_package``) and tests/support/tiny_models.py import this package by its path, as ``fluxlora_selftest``:
that works before the pack is loaded as a custom node and whatever its folder is called ("comfyui-fluxlora" is no
Python name), and the pack's folder never goes on sys.path, where its ``nodes`` package would shadow ComfyUI's
``nodes.py``.
"""
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACK_DIR = HERE.parent


def _load_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The pack's atomic file write (stdlib only), from trainer/files.py itself so that there is one implementation; read
# by its path, because the pack may not be loaded yet when the tiny models are written.
write_replacing = _load_file(f"{__name__}._files", PACK_DIR / "trainer" / "files.py").write_replacing
