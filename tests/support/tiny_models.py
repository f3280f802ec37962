"""The tiny FLUX.1 / CLIP / VAE models and their loader shims now live in the pack, in selftest/tiny_models.py, where
smoke.py (the install self-test) can import them. This module IS that one (``import tiny_models`` hands out the same
module object), so every test and bench import keeps working and a patched attribute is seen everywhere."""
import importlib.util
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]


def _selftest_package():
    """The pack's selftest/ package, imported by its path as ``fluxlora_selftest`` (as smoke.py imports it)."""
    if "fluxlora_selftest" not in sys.modules:
        init = PACK_DIR / "selftest" / "__init__.py"
        spec = importlib.util.spec_from_file_location("fluxlora_selftest", init,
                                                      submodule_search_locations=[str(init.parent)])
        sys.modules[spec.name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["fluxlora_selftest"]


sys.modules[__name__] = importlib.import_module(f"{_selftest_package().__name__}.tiny_models")
