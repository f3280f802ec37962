"""TESTS ONLY stub of torchvision.transforms (see __init__.py)."""


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(f"torchvision is stubbed for CPU tests; torchvision.transforms.{name} is unavailable")
