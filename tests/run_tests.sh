#!/usr/bin/env bash
# The test command: runs the suite (or the pytest arguments given) against one real ComfyUI (see tests/env.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PACK_DIR"
if [ ! -f "$COMFY_ROOT/comfy/model_patcher.py" ]; then
  echo "No ComfyUI at $COMFY_ROOT. Set COMFYUI_PATH to a ComfyUI folder, or run: bash tests/setup_env.sh" >&2
  exit 2
fi
VENV="$(venv_for_comfy)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "No test environment at $VENV for ComfyUI $(comfy_version) ($COMFY_ROOT) - run: bash tests/setup_env.sh" >&2
  exit 2
fi
export COMFYUI_PATH="$COMFY_ROOT"
echo "Testing against ComfyUI $(comfy_version) at $COMFY_ROOT"
if [ $# -eq 0 ]; then set -- tests; fi
exec "$VENV/bin/python" -m pytest -q "$@"
