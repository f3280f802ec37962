"""TESTS ONLY - never shipped in the pack.

The PyPI torchvision wheel is a CUDA build that cannot be imported next to the CPU torch
of the test machine, but ComfyUI imports `torchvision.transforms`/`torchvision.models`
at start-up (cosmos / cascade model files). This stub makes those imports succeed; any
real use of torchvision raises ImportError. It is put on sys.path by tests/comfy_env.py
only when the real torchvision cannot be imported.
"""
from . import transforms, models  # noqa: F401

__version__ = "0.0.0+fluxlora-test-stub"


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(f"torchvision is stubbed for CPU tests; torchvision.{name} is unavailable")
