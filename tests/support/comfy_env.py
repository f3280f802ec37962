"""Puts the real ComfyUI on sys.path for the tests (CPU, no downloads).

ComfyUI is found at $COMFYUI_PATH, else the ComfyUI this pack sits in (<ComfyUI>/custom_nodes/<pack>),
else comfy-cli's default workspace ~/comfy/ComfyUI. Without one the suite fails with instructions.
"""
import importlib.util
import os
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]
SHIMS = Path(__file__).resolve().parent / "shims"


def find_comfyui() -> Path:
    candidates = []
    if os.environ.get("COMFYUI_PATH"):
        candidates.append(Path(os.environ["COMFYUI_PATH"]))
    candidates += [PACK_DIR.parent.parent, Path.home() / "comfy" / "ComfyUI"]
    for c in candidates:
        if (c / "comfy" / "model_patcher.py").is_file() and (c / "execution.py").is_file():
            return c.resolve()
    raise RuntimeError(
        "ComfyUI not found. The tests run against a real ComfyUI (v0.8.0 and v0.33.0 are tested): set COMFYUI_PATH, put this pack in "
        "<ComfyUI>/custom_nodes/, or run `bash tests/setup_env.sh`, which installs ComfyUI with comfy-cli into "
        "~/comfy/ComfyUI. Looked in: " + ", ".join(str(c) for c in candidates))


def _imports(name: str) -> bool:
    """Whether the real package imports (it then stays in sys.modules, ahead of any stub)."""
    if importlib.util.find_spec(name) is None:
        return False
    try:
        importlib.import_module(name)
        return True
    except Exception:
        sys.modules.pop(name, None)
        return False


_BOOTED = None


def boot(cpu: bool = True):
    """Imports ComfyUI once (on the CPU unless ``cpu`` is False, PyTorch attention) and returns its root."""
    global _BOOTED
    if _BOOTED is not None:
        return _BOOTED
    root = find_comfyui()
    # peft / transformers / diffusers decide once, at import, whether torchvision exists: let them see
    # the truth before the tests-only stub (needed by ComfyUI's start-up imports) goes on sys.path.
    import transformers.utils.import_utils  # noqa: F401
    if importlib.util.find_spec("diffusers") is not None:  # tests only; the GPU bench box has no diffusers
        import diffusers.utils.import_utils  # noqa: F401
    import peft  # noqa: F401
    if not all([_imports("torchvision"), _imports("torchaudio")]):
        sys.path.insert(0, str(SHIMS))  # tests-only stubs for whichever of the two cannot import
    sys.path.insert(0, str(root))
    from comfy.cli_args import args
    args.cpu = cpu
    args.use_pytorch_cross_attention = True  # sub-quadratic attention re-chunks on recompute (ComfyUI#15845)
    import utils.extra_config  # noqa: F401  (ComfyUI's 'utils' package before nodes.py shadows it)
    import comfy.model_management  # noqa: F401
    _BOOTED = root
    return root


PACK_NAME = "comfyui_fluxlora"


def pack_parent(tmp_root: Path) -> Path:
    """A custom_nodes-style folder holding this pack under its import name (a symlink)."""
    parent = Path(tmp_root) / "custom_nodes"
    parent.mkdir(parents=True, exist_ok=True)
    link = parent / PACK_NAME
    if not link.exists():
        link.symlink_to(PACK_DIR, target_is_directory=True)
    return parent
