"""Packages that some settings need but that do not install everywhere ComfyUI runs.

bitsandbytes (NF4 base weights, adamw8bit) has no wheel for some platforms, Intel macOS among them, so
requirements.txt installs it only where it has one. The settings that need it are refused before any encoding,
naming what to choose instead, and ``base_weights: auto`` does not pick NF4 without it."""
from functools import lru_cache


@lru_cache(maxsize=None)
def bitsandbytes_error() -> str:
    """'' when bitsandbytes imports here, else why it does not (ImportError, or a broken CUDA setup raising at
    import). Imported once per process, when a setting that may need it is used."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return ""


def bitsandbytes_refusal(what: str, instead: str) -> str:
    """The message for a setting that needs bitsandbytes where it does not import."""
    return (f"{what} needs the bitsandbytes package, which does not import here ({bitsandbytes_error()}). "
            f"bitsandbytes has no build for some systems (e.g. Intel Macs); where it has one, install it into "
            f"ComfyUI's Python with 'pip install bitsandbytes'. Or {instead}.")
