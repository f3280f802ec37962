"""TESTS ONLY - never shipped in the pack.

PyPI's torchvision and torchaudio wheels are CUDA builds that cannot be imported next to the CPU torch of the
test machine, but ComfyUI imports them at start-up (model files, audio nodes, ``from torchvision.ops import
roi_align``, ``from torchvision.transforms.functional import InterpolationMode`` ...). These stubs make every
``torchvision.*`` / ``torchaudio.*`` import succeed; every name they hand out is a placeholder class that raises
ImportError when it is used (called, instantiated). tests/comfy_env.py puts them on sys.path only when the real
package cannot be imported.
"""
import importlib.abc
import importlib.machinery
import sys
import types


class _Missing(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        raise ImportError(f"{cls.__qualname__} is unavailable: torchvision/torchaudio are stubbed for the CPU tests")


def _placeholder(qualname):
    return _Missing(qualname.rsplit(".", 1)[-1], (), {"__qualname__": qualname, "__module__": qualname.rsplit(".", 1)[0]})


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        full = f"{self.__name__}.{name}"
        if full in sys.modules:
            return sys.modules[full]
        return _placeholder(full)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, root):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(self.root + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        parent, _, child = module.__name__.rpartition(".")
        setattr(sys.modules[parent], child, module)


def install(package_module):
    """Turns the stub package ``package_module`` into a module whose every submodule and name exists."""
    package_module.__class__ = _StubModule
    package_module.__version__ = "0.0.0+fluxlora-test-stub"
    if not any(isinstance(f, _Finder) and f.root == package_module.__name__ for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(package_module.__name__))
