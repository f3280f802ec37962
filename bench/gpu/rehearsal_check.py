"""Checks a rehearsal's results (bench/gpu/kit.sh rehearse): every bench row ran on the box's Python with the bundle's
ComfyUI and trained with finite losses. Exit 1 naming each row that did not."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rows import ROWS  # noqa: E402


def problems(out: Path) -> list:
    env = json.loads((out / "env.json").read_text())
    found = []
    if not env["python"].startswith("3.12"):
        found.append(f"ran on Python {env['python']}, not the box's 3.12")
    if not env["comfyui_path"].endswith("/ComfyUI") or "fluxlora-gpu-kit" not in env["comfyui_path"]:
        found.append(f"ComfyUI came from {env['comfyui_path']}, not the bundle")
    results = {}
    for line in (out / "rows.jsonl").read_text().splitlines():
        entry = json.loads(line)
        results[entry["row"]["key"]] = entry["result"]
    for row in ROWS:
        result = results.get(row.key)
        if result is None:
            found.append(f"{row.key}: no result")
        elif "s_per_step" not in result:
            found.append(f"{row.key}: {result.get('error') or result.get('skipped') or result.get('oom')}")
        elif not result["s_per_step"] > 0:
            found.append(f"{row.key}: {result['s_per_step']} s/step is not a time")
        elif not result.get("loss_finite", True):
            found.append(f"{row.key}: non-finite loss")
    return found


if __name__ == "__main__":
    out = Path(sys.argv[1])
    found = problems(out)
    print((out / "RESULTS.md").read_text())
    if found:
        print("REHEARSAL FAILED:\n  " + "\n  ".join(found))
        sys.exit(1)
    print(f"rehearsal: all {len(ROWS)} rows ran")
