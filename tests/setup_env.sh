#!/usr/bin/env bash
# One-command developer/CI setup for ComfyUI-FluxLoRA's test suite, for one ComfyUI (see tests/env.sh):
#  - ComfyUI itself: $COMFYUI_PATH, else the ComfyUI this pack sits in, else ~/comfy/ComfyUI; if there is none,
#    comfy-cli installs ComfyUI $COMFYUI_VERSION (default 0.8.0) there
#  - a virtual environment for that ComfyUI (FLUXLORA_VENV, default ~/.venvs/comfyui-fluxlora-<ComfyUI version>)
#  - torch (TORCH_VERSION, default 2.13.0; pinned by a constraints file so nothing upgrades it)
#  - that ComfyUI's requirements, this pack's requirements and the test requirements; Debian's chromium
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
# pip warns about unreadable extra index folders on some machines; keep the log readable
pip_quiet() { "$1" -m pip "${@:2}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# comfy-cli in its own virtualenv: it installs ComfyUI when there is none, and the tests pack and validate the
# Registry archive with it (tests/unit/test_registry_package.py); ruff is what `comfy node validate` runs
TOOLS="$HOME/.venvs/comfy-cli"
[ -x "$TOOLS/bin/python" ] || python3 -m venv "$TOOLS"
[ -x "$TOOLS/bin/comfy" ] && [ -x "$TOOLS/bin/ruff" ] || \
  pip_quiet "$TOOLS/bin/python" install -q --disable-pip-version-check comfy-cli==1.23.0 ruff==0.17.6
if [ ! -f "$COMFY_ROOT/comfy/model_patcher.py" ]; then
  echo "ComfyUI not found at $COMFY_ROOT - installing ComfyUI ${COMFYUI_VERSION:-0.8.0} there with comfy-cli"
  if ! "$TOOLS/bin/comfy" --skip-prompt --workspace "$COMFY_ROOT" install --version "${COMFYUI_VERSION:-0.8.0}" --cpu \
      --skip-manager --skip-torch-or-directml --skip-requirement; then
    echo "ERROR: could not install ComfyUI into $COMFY_ROOT. Put a ComfyUI source tree there (or set COMFYUI_PATH);" \
         "README.md, section Tests, says where the tested versions come from." >&2
    exit 2
  fi
fi
VENV="$(venv_for_comfy)"
echo "ComfyUI $(comfy_version): $COMFY_ROOT; environment: $VENV"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"
PIP=(pip_quiet "$PY" install -q --disable-pip-version-check -c "$CONSTRAINTS")
"${PIP[@]}" "torch==$TORCH_VERSION"

# ComfyUI's own requirements, minus the packages with no CPU build here / not needed to import ComfyUI
# (torchvision and torchaudio are replaced by tests-only stubs, tests/shims)
grep -vE '^\s*(#|$|torch($|[<>=~ ])|torchvision|torchaudio|spandrel|comfy-angle|PyOpenGL)' \
  "$COMFY_ROOT/requirements.txt" > "$VENV/comfyui-requirements.txt"
"${PIP[@]}" -r "$VENV/comfyui-requirements.txt"
"${PIP[@]}" -r "$PACK_DIR/requirements.txt" -r "$PACK_DIR/tests/requirements.txt"
# the newest ComfyUI frontend, unpacked for ComfyUI's --front-end-root: the browser tests run against it too
# (FLUXLORA_FRONTEND_ROOT, set by .ci/run), as users of current ComfyUI see the pack
NEWEST_FRONTEND="${NEWEST_FRONTEND:-1.58.1}"
FRONTEND_DIR="$HOME/.cache/fluxlora-frontend/$NEWEST_FRONTEND"
if [ ! -f "$FRONTEND_DIR/static/index.html" ]; then
  tmp="$(mktemp -d)"
  pip_quiet "$PY" download -q --disable-pip-version-check --no-deps -d "$tmp" "comfyui-frontend-package==$NEWEST_FRONTEND"
  rm -rf "$FRONTEND_DIR"; mkdir -p "$FRONTEND_DIR"
  "$PY" -m zipfile -e "$tmp"/comfyui_frontend_package-*.whl "$tmp/unpacked"
  mv "$tmp/unpacked/comfyui_frontend_package/static" "$FRONTEND_DIR/static"
  rm -rf "$tmp"
fi
# headless Chromium for the browser tests (Debian's package; Playwright is pointed at it, downloads nothing)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "WARNING: could not install chromium; the browser tests will fail (apt-get install chromium)" >&2
  else
    echo "WARNING: chromium not found; the browser tests will fail (apt-get install chromium)" >&2
  fi
fi
"$PY" -c "import torch, peft, diffusers, transformers; print('torch', torch.__version__, 'peft', peft.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
