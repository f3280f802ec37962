#!/usr/bin/env bash
# The test command: runs the whole suite against the real ComfyUI found by tests/comfy_env.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${FLUXLORA_VENV:-$HOME/.venvs/comfyui-fluxlora}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "No test environment at $VENV - run: bash tests/setup_env.sh" >&2
  exit 2
fi
if [ $# -eq 0 ]; then set -- tests; fi
exec "$VENV/bin/python" -m pytest -q "$@"
