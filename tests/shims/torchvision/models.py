"""TESTS ONLY stub of torchvision.models (see __init__.py)."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(f"torchvision is stubbed for CPU tests; torchvision.models.{name} is unavailable")
