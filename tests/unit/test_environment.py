"""Without a ComfyUI the suite fails with instructions instead of skipping."""
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "support"


def test_missing_comfyui_is_an_error_with_instructions(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "COMFYUI_PATH": str(tmp_path / "nowhere")}
    proc = subprocess.run([sys.executable, "-c", "import comfy_env; comfy_env.find_comfyui()"], cwd=str(HERE),
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "ComfyUI not found" in proc.stderr and "tests/setup_env.sh" in proc.stderr and "COMFYUI_PATH" in proc.stderr
