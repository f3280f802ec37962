# Sourced by setup_env.sh and run_tests.sh: which ComfyUI the suite runs against, and its virtual environment.
#   COMFYUI_PATH   the ComfyUI to test against; default: the ComfyUI this pack sits in (<ComfyUI>/custom_nodes/<pack>),
#                  else comfy-cli's default workspace ~/comfy/ComfyUI
#   FLUXLORA_VENV  the virtual environment; default: ~/.venvs/comfyui-fluxlora-<ComfyUI version>, one per ComfyUI
#                  (their pinned requirements differ: comfy-kitchen, the frontend package, ...)
PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY_ROOT="$COMFYUI_PATH"
elif [ -f "$PACK_DIR/../../comfy/model_patcher.py" ]; then
  COMFY_ROOT="$(cd "$PACK_DIR/../.." && pwd)"
else
  COMFY_ROOT="$HOME/comfy/ComfyUI"
fi
comfy_version() {
  sed -n 's/^__version__ *= *"\(.*\)".*/\1/p' "$COMFY_ROOT/comfyui_version.py" 2>/dev/null
}
venv_for_comfy() {
  local v
  v="$(comfy_version)"
  echo "${FLUXLORA_VENV:-$HOME/.venvs/comfyui-fluxlora-${v:-unknown}}"
}
