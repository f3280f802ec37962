"""The GPU bench rows in priority order, within a time budget: what ``bench/gpu/kit.sh run`` executes on the GPU box.

    python bench/gpu/rows.py [--budget-s 480] [--out DIR] [--rows key,key] [--tiny]

Each row is one bench/fullsize.py configuration in a fresh process (clean peak statistics). The moment a row is
measured it is appended to DIR/rows.jsonl and DIR/RESULTS.md is rewritten (atomically), so a run cut off at the box's
limit still returns every row it finished. A row is started only when its expected cost fits in what is left of the
budget, and is stopped at the budget; the run then prints the table and exits 0 with the rows it has. ``--rows`` runs
only the named rows (e.g. the ones a cut-off first run did not reach). ``--tiny``: the same rows on the test suite's
tiny models on the CPU (the rehearsal), at 1/16 of the resolutions.
"""
import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import fullsize  # noqa: E402


@dataclass(frozen=True)
class Row:
    key: str
    group: int            # the bench issue's priority group (1 as loaded, 2 native, 3 cards, 4 switches, 5 trace, 6 klein)
    what: str
    kind: str = "ours"    # 'ours' (the pack's trainer) or 'native' (ComfyUI's TrainLoraNode)
    config: str = "flux-dev"
    resolution: int = 1024
    fmt: str = "bf16"     # the loader's weight_dtype
    base_weights: str = "as loaded"
    vram: str = "auto"
    card_gb: float = 0
    gpu_weights_gb: float = 0
    compile_blocks: bool = False
    fp8_matmul: bool = False
    memory_trace: bool = False
    cost_s: float = 60    # expected wall time on an H100, start-up included (estimated: ComfyUI boot, a 12B model
    #                       built on the GPU, 2 warm-up + 8 timed steps)
    compare_to: str = ""  # the row it is measured against (native / speed switches)


ROWS = [
    Row("bf16-1024", 1, "FLUX.1-dev bf16 as loaded", cost_s=75),
    Row("fp8-1024", 1, "FLUX.1-dev fp8 as loaded", fmt="fp8_e4m3fn", cost_s=75),
    Row("bf16-512", 1, "FLUX.1-dev bf16 as loaded", resolution=512, cost_s=55),
    Row("fp8-512", 1, "FLUX.1-dev fp8 as loaded", resolution=512, fmt="fp8_e4m3fn", cost_s=55),
    Row("native-1024", 2, "ComfyUI TrainLoraNode, bf16", kind="native", cost_s=90, compare_to="bf16-1024"),
    Row("native-512", 2, "ComfyUI TrainLoraNode, bf16", kind="native", resolution=512, cost_s=60,
        compare_to="bf16-512"),
    Row("card16", 3, "16 GB card (simulated), the 16 GB tier", fmt="fp8_e4m3fn", base_weights="auto", vram="16 GB",
        card_gb=16, cost_s=75),
    Row("card12", 3, "12 GB card (simulated), the 12 GB tier", fmt="fp8_e4m3fn", base_weights="auto", vram="12 GB",
        card_gb=12, cost_s=100),
    Row("card8", 3, "8 GB card (simulated), the 8 GB tier", fmt="fp8_e4m3fn", base_weights="auto", vram="8 GB",
        card_gb=8, cost_s=120),
    Row("compile-1024", 4, "compile_blocks on, bf16", compile_blocks=True, cost_s=150, compare_to="bf16-1024"),
    Row("fp8mm-1024", 4, "fp8_matmul on, fp8", fmt="fp8_e4m3fn", fp8_matmul=True, cost_s=75, compare_to="fp8-1024"),
    Row("trace-fp8-1024", 5, "fp8 as loaded, CUDA memory trace", fmt="fp8_e4m3fn", memory_trace=True, cost_s=100,
        compare_to="fp8-1024"),
    Row("klein4b-1024", 6, "FLUX.2 [klein] 4B bf16", config="klein-4b", cost_s=50),
    Row("klein9b-1024", 6, "FLUX.2 [klein] 9B bf16", config="klein-9b", cost_s=60),
]
GPU_STEPS, GPU_WARMUP = 8, 2
TINY_STEPS, TINY_WARMUP, TINY_COST_S = 2, 1, 45
# --tiny: the format each tier's plan chooses at full size (bench/RESULTS.md "VRAM tiers"), forced on the tiny model
# (which fits any tier as loaded), so the rehearsal exercises the fp8 copy, NF4 (bitsandbytes) and streaming
TINY_TIER_FORMATS = {"16 GB": ("fp8", 0.0), "12 GB": ("nf4", 0.0), "8 GB": ("fp8", 0.0001)}


def tiny(row: Row) -> Row:
    """The row on the tests' tiny models on the CPU: same kind, format and switches, 1/16 of the resolution."""
    config = "klein-tiny" if row.config.startswith("klein") else "tiny"
    base, stream = TINY_TIER_FORMATS.get(row.vram, (row.base_weights, row.gpu_weights_gb))
    return replace(row, config=config, resolution=max(32, row.resolution // 16), card_gb=0, base_weights=base,
                   gpu_weights_gb=stream, cost_s=TINY_COST_S)


def _fullsize_args(row: Row, steps: int, warmup: int) -> argparse.Namespace:
    base = "fp8" if row.fp8_matmul and row.base_weights == "as loaded" else row.base_weights
    return argparse.Namespace(steps=steps, warmup=warmup, rank=16, config=row.config, base_weights=base, vram=row.vram,
                              gpu_weights_gb=row.gpu_weights_gb, card_gb=row.card_gb, compile_blocks=row.compile_blocks,
                              fp8_matmul=row.fp8_matmul, memory_trace=row.memory_trace)


def _write_atomically(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _gib(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _first_step(out: dict) -> str:
    return f"{out['first_step_s']:.1f}" if "first_step_s" in out else "-"


def table(results: list, header: dict) -> str:
    """The markdown table of the measured rows (and those skipped or failed, saying why)."""
    by_key = {r["row"]["key"]: r for r in results}
    lines = [f"# GPU bench — {header['device']}, {header['date']}, ComfyUI {header['comfyui']}, torch {header['torch']}",
             f"# command: {header['command']}",
             f"# tree: {header['tree']}; rank 16, batch 1, gradient checkpointing, AdamW, "
             f"{header['warmup']} warm-up + {header['steps']} timed steps (median)",
             "",
             "| row | what | res | loaded as | trained as | s/step | first step s | peak alloc / reserved GiB "
             "| plan's peak GiB (error) | peak RAM GiB | against | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        row, out = r["row"], r["result"]
        trained = out.get("plan_base_weights", "native bf16" if row["kind"] == "native" else "")
        if row["fp8_matmul"]:
            trained += " + fp8 matmul"
        if row["compile_blocks"]:
            trained += " + compiled"
        if "s_per_step" not in out:
            status = out.get("skipped") and f"not run: {out['skipped']}" or out.get("oom") and "OOM" or \
                f"failed: {out.get('error')}"
            lines.append(f"| {row['key']} | {row['what']} | {row['resolution']} | {row['fmt']} | {trained} | {status} "
                         f"| | | | | | |")
            continue
        measured = out.get("peak_allocated_gb")
        plan = out.get("plan_peak_gb")
        plan_cell = _gib(plan) + (f" ({(plan - measured) / measured:+.0%})" if plan is not None and measured else "")
        against = ""
        base = by_key.get(row["compare_to"], {}).get("result", {})
        if "s_per_step" in base:
            ratio = out["s_per_step"] / base["s_per_step"]
            against = f"{ratio:.2f}x the s/step of {row['compare_to']}"
            if row["compile_blocks"]:
                against += f"; compile ≈{out['first_step_s'] - base['first_step_s']:.0f} s"
        note = "" if out.get("loss_finite", True) else "non-finite loss"
        if out.get("note"):
            note = out["note"]
        lines.append(f"| {row['key']} | {row['what']} | {row['resolution']} | {row['fmt']} | {trained} "
                     f"| {out['s_per_step']:.3f} | {_first_step(out)} "
                     f"| {_gib(measured)} / {_gib(out.get('peak_reserved_gb'))} | {plan_cell} "
                     f"| {out['peak_ram_gb']:.1f} | {against} | {note} |")
    for r in results:
        for_peak = r["result"].get("at_peak")
        if for_peak:
            lines += ["", f"What is alive at the peak of {r['row']['key']} (CUDA trace):", ""]
            lines += [f"    {gib:6.2f} GiB  {where}" for where, gib in for_peak]
    return "\n".join(lines) + "\n"


def environment(tiny_run: bool) -> dict:
    import importlib.metadata as md

    import torch
    import comfy_env
    root = comfy_env.find_comfyui()
    packages = {}
    for name in ("torch", "triton", "transformers", "peft", "safetensors", "numpy", "bitsandbytes", "comfy-kitchen",
                 "comfy-aimdo", "av", "prodigyopt"):
        try:
            packages[name] = md.version(name)
        except md.PackageNotFoundError:
            packages[name] = None
    manifest = HERE / "bundle" / "MANIFEST.json"
    tree = json.loads(manifest.read_text())["tree"] if manifest.is_file() else "unknown"
    cuda = torch.cuda.is_available()
    return {"device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
            "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
            "comfyui": (root / "comfyui_version.py").read_text().split('"')[1], "comfyui_path": str(root),
            "python": platform.python_version(), "packages": packages, "tree": tree, "tiny": tiny_run,
            "cpus": os.cpu_count(), "command": " ".join(["bench/gpu/kit.sh run"] + sys.argv[1:])}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=480, help="stop starting rows when this is near (seconds)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or HERE.parent / "out"))
    ap.add_argument("--rows", default="", help="comma-separated row keys (default: all, in priority order)")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny models on the CPU (the rehearsal)")
    ap.add_argument("--list", action="store_true", help="print the rows and exit")
    args = ap.parse_args()
    rows = ROWS
    if args.rows:
        wanted = args.rows.split(",")
        unknown = [k for k in wanted if k not in {r.key for r in ROWS}]
        if unknown:
            raise SystemExit(f"unknown rows: {', '.join(unknown)}; rows: {', '.join(r.key for r in ROWS)}")
        rows = [r for r in ROWS if r.key in wanted]
    if args.list:
        for r in rows:
            print(f"{r.key:15} group {r.group}  ~{r.cost_s:.0f} s  {r.what}, {r.resolution} px")
        return
    if args.tiny:
        rows = [tiny(r) for r in rows]
    steps, warmup = (TINY_STEPS, TINY_WARMUP) if args.tiny else (GPU_STEPS, GPU_WARMUP)
    start = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    header = dict(environment(args.tiny), steps=steps, warmup=warmup)
    _write_atomically(args.out / "env.json", json.dumps(header, indent=1))
    print(f"# {header['device']}, torch {header['torch']}, ComfyUI {header['comfyui']}, {len(rows)} rows, "
          f"budget {args.budget_s:.0f} s", flush=True)
    results, log = [], args.out / "rows.jsonl"
    for row in rows:
        left = args.budget_s - (time.monotonic() - start)
        if left < row.cost_s:
            out = {"skipped": f"budget ({left:.0f} s left, the row needs ~{row.cost_s:.0f} s); "
                              f"rerun with --rows {row.key}"}
        else:
            t = time.monotonic()
            out = fullsize._run_child(row.kind, _fullsize_args(row, steps, warmup), row.resolution, row.fmt,
                                      timeout=left)
            out["wall_s"] = round(time.monotonic() - t, 1)
        results.append({"row": asdict(row), "result": out})
        with open(log, "a") as f:
            f.write(json.dumps(results[-1]) + "\n")
            f.flush()
            os.fsync(f.fileno())
        _write_atomically(args.out / "RESULTS.md", table(results, header))
        status = f"{out['s_per_step']:.3f} s/step" if "s_per_step" in out else (out.get("skipped") or out.get("oom")
                                                                                 or out.get("error"))
        print(f"[{time.monotonic() - start:5.0f} s] {row.key}: {status}", flush=True)
    print()
    print(table(results, header), flush=True)


if __name__ == "__main__":
    main()
