#!/usr/bin/env bash
# One-command developer/CI setup for ComfyUI-FluxLoRA's test suite.
#  - a virtual environment (FLUXLORA_VENV, default ~/.venvs/comfyui-fluxlora)
#  - torch (TORCH_VERSION, default 2.13.0; pinned by a constraints file so nothing upgrades it)
#  - ComfyUI itself: $COMFYUI_PATH, else the ComfyUI this pack sits in, else ~/comfy/ComfyUI;
#    if none exists, it is installed there with comfy-cli
#  - ComfyUI's requirements, this pack's requirements and the test requirements
set -euo pipefail
PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FLUXLORA_VENV:-$HOME/.venvs/comfyui-fluxlora}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"
PIP=(pip_quiet install -q --disable-pip-version-check -c "$CONSTRAINTS")
# pip warns about unreadable extra index folders on some machines; keep the log readable
pip_quiet() { "$PY" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

"${PIP[@]}" "torch==$TORCH_VERSION"

comfy_root=""
if [ -n "${COMFYUI_PATH:-}" ]; then
  comfy_root="$COMFYUI_PATH"
elif [ -f "$PACK_DIR/../../comfy/model_patcher.py" ]; then
  comfy_root="$(cd "$PACK_DIR/../.." && pwd)"
else
  comfy_root="$HOME/comfy/ComfyUI"
fi
if [ ! -f "$comfy_root/comfy/model_patcher.py" ]; then
  echo "ComfyUI not found at $comfy_root - installing it with comfy-cli"
  "${PIP[@]}" comfy-cli
  "$VENV/bin/comfy" --skip-prompt --workspace "$comfy_root" install --version 0.8.0 --cpu --skip-manager --skip-torch-or-directml --skip-requirement
fi
echo "ComfyUI: $comfy_root"

# ComfyUI's own requirements, minus the packages with no CPU build / not needed to import ComfyUI
grep -vE '^\s*(#|$|torch($|[<>=~ ])|torchvision|torchaudio|kornia|spandrel)' "$comfy_root/requirements.txt" > "$VENV/comfyui-requirements.txt"
"${PIP[@]}" -r "$VENV/comfyui-requirements.txt"
"${PIP[@]}" -r "$PACK_DIR/requirements.txt" -r "$PACK_DIR/tests/requirements.txt"
# headless Chromium for the frontend tests (Debian's package; Playwright is pointed at it, downloads nothing)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "WARNING: could not install chromium; the browser tests will be skipped" >&2
  else
    echo "WARNING: chromium not found; the browser tests will be skipped (apt-get install chromium)" >&2
  fi
fi
"$PY" -c "import torch, peft, diffusers, transformers; print('torch', torch.__version__, 'peft', peft.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
