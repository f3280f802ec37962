#!/usr/bin/env bash
# The GPU bench kit: a bare, offline GPU box turned into measured speed and VRAM numbers in a few minutes.
#
#   bash bench/gpu/kit.sh build                       # here: wheels + trimmed ComfyUI into bench/gpu/bundle (<= 60 MiB)
#   bash bench/gpu/kit.sh run [--budget-s 480] [--rows k1,k2] [--tiny]
#                                                     # on the box: offline install, then the bench rows by priority
#   bash bench/gpu/kit.sh rehearse                    # here: the box's Python 3.12 + packages, no network, run --tiny
#
# On the box (device tool): carry bench/gpu/bundle and run `bash bench/gpu/kit.sh run --budget-s 480` with a timeout of
# about 540 s. Results go to $OUT (else bench/out/) row by row: RESULTS.md, rows.jsonl, env.json, run.log.
set -euo pipefail
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$KIT/../.." && pwd)"
BUNDLE="$KIT/bundle"
PYTHON="${PYTHON:-python3}"
action="${1:-}"; shift || true

install_bundle() {
  # the bundle's wheels into a private site folder (ahead of the box's own packages), ComfyUI unpacked beside it
  local base="${FLUXLORA_KIT_DIR:-${TMPDIR:-/tmp}/fluxlora-gpu-kit}"
  "$PYTHON" "$KIT/bundle.py" check
  rm -rf "$base"; mkdir -p "$base/site"
  if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check --target "$base/site" \
      "$BUNDLE"/wheels/*.whl
  else   # no pip on the box: a wheel is a zip of its site-packages files
    for whl in "$BUNDLE"/wheels/*.whl; do "$PYTHON" -m zipfile -e "$whl" "$base/site"; done
  fi
  tar -xzf "$BUNDLE/ComfyUI.tar.gz" -C "$base"
  export PYTHONPATH="$base/site${PYTHONPATH:+:$PYTHONPATH}" COMFYUI_PATH="$base/ComfyUI"
}

case "$action" in
  build)
    python3 "$KIT/bundle.py" build "$@"
    echo "project tree: $(git -C "$ROOT" ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes travel beside it"
    ;;
  run)
    out="${OUT:-$ROOT/bench/out}"; mkdir -p "$out"
    export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
    {
      echo "# kit.sh run $*  ($(date -u +%FT%TZ), $(nproc) CPUs)"
      command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
      t0=$(date +%s)
      install_bundle
      echo "# bundle installed in $(( $(date +%s) - t0 )) s: ComfyUI at $COMFYUI_PATH"
      cd "$ROOT"
      "$PYTHON" "$KIT/rows.py" --out "$out" "$@"
    } 2>&1 | tee -a "$out/run.log"
    exit "${PIPESTATUS[0]}"
    ;;
  rehearse)
    # A Python 3.12 virtualenv holding only the box's packages (bench/gpu/box-packages.txt; torch is PyPI's build of
    # the box's version, run on the CPU), then `run --tiny` with the network unplugged (a new network namespace).
    venv="${FLUXLORA_BOX_VENV:-$HOME/.venvs/fluxlora-gpubox-py312}"
    want="$(sha256sum "$KIT/box-packages.txt" | cut -c1-16)"
    if [ "$(cat "$venv/.box-packages" 2>/dev/null)" != "$want" ]; then
      py312=""
      for candidate in "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 python3.12; do
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then py312="$candidate"; break; fi
      done
      [ -n "$py312" ] || { echo "rehearse needs Python 3.12 (pyenv install 3.12)" >&2; exit 2; }
      rm -rf "$venv"; "$py312" -m venv "$venv"
      grep -vE '^\s*(#|$)' "$KIT/box-packages.txt" > "$venv/box-requirements.txt"
      "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$venv/box-requirements.txt" \
        2> >(grep -v "is ignored: it is neither" >&2)
      echo "$want" > "$venv/.box-packages"
    fi
    [ -f "$BUNDLE/MANIFEST.json" ] || bash "$KIT/kit.sh" build
    out="${OUT:-$(mktemp -d -t fluxlora-rehearsal.XXXX)}"
    echo "rehearsal: $venv ($("$venv/bin/python" --version)), no network, results in $out"
    t0=$(date +%s)
    unshare --net env OUT="$out" PYTHON="$venv/bin/python" PYTHONPATH= \
      FLUXLORA_KIT_DIR="$(mktemp -d -t fluxlora-gpu-kit.XXXX)" bash "$KIT/kit.sh" run --tiny --budget-s 1500 "$@"
    "$venv/bin/python" "$KIT/rehearsal_check.py" "$out"
    echo "rehearsal passed in $(( $(date +%s) - t0 )) s"
    ;;
  *)
    sed -n '2,11p' "$0"; exit 2 ;;
esac
