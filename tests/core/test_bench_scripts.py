"""The full-size bench and the memory estimator run (on the CPU, at FLUX.1-dev's depth with a narrow hidden width) and
print what they promise; the estimator's fake-tensor trace sees exactly the memory the real run allocates."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script, *args):
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_fullsize_bench_trains_and_prints_a_row():
    out = _run("fullsize.py", "--config", "flux-dev-narrow", "--resolutions", "128", "--formats", "fp8_e4m3fn",
               "--steps", "1", "--warmup", "1")
    row = next(line for line in out.splitlines() if line.startswith("| 128 | fp8_e4m3fn |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[2]) > 0 and float(cells[3]) > 0, row  # s/step, first step: a number, finite losses
    assert float(cells[5]) > 0  # peak RAM
    assert "# device: CPU" in out and "# command:" in out


def test_estimator_trace_matches_the_real_run():
    out = _run("estimate.py", "--check", "--config", "flux-dev-narrow", "--resolutions", "128", "--formats", "bf16",
               "--breakdown")
    real, fake = map(float, re.search(r"real peak ([\d.]+) MiB, fake-traced peak ([\d.]+) MiB", out).groups())
    assert real > 1 and abs(fake - real) / real < 0.01, out
    row = next(line for line in out.splitlines() if line.startswith("| 128 | bf16 |"))
    peak, weights, lora, rest, tflop = (float(c) for c in row.strip("|").split("|")[2:7])
    assert peak >= weights > 0 and rest >= 0 and tflop >= 0
    assert "ESTIMATED" in out
    # --breakdown: what is alive at the peak, by allocating code; the pack's own allocations are named
    rows = [re.match(r"#\s+([\d.]+) GiB  (.+)", line) for line in out.split("alive at the peak")[1].splitlines()[1:]]
    sites = {m.group(2): float(m.group(1)) for m in rows if m}
    assert sites["the MODEL's weights (loaded before training)"] == pytest.approx(weights, abs=0.01)
    assert any(site.startswith("trainer/") for site in sites)
    assert sum(sites.values()) <= peak + 0.01 * len(sites)


def test_fullsize_bench_runs_a_low_vram_tier():
    out = _run("fullsize.py", "--config", "flux-dev-narrow", "--resolutions", "128", "--formats", "bf16",
               "--steps", "1", "--warmup", "1", "--base-weights", "nf4", "--vram", "12 GB")
    assert "base_weights nf4, vram 12 GB" in out
    row = next(line for line in out.splitlines() if line.startswith("| 128 | bf16 |"))
    assert float(row.strip("|").split("|")[2]) > 0, row


def test_vram_tiers_bench_prints_every_tier_as_an_estimate():
    out = _run("vram_tiers.py")
    assert "ESTIMATED" in out
    rows = {tuple(line.split()[:3]): line.split() for line in out.splitlines() if line.strip().endswith(tuple("0123456789"))
            and line.split()[0] in ("24", "16", "12", "8")}
    assert {(t, "GB", px) for t in ("24", "16", "12", "8") for px in ("512", "768", "1024")} <= set(rows), out
    for (tier, _, _), cells in rows.items():
        assert float(cells[-1]) <= float(tier), cells   # the estimated peak fits the tier it names


@pytest.mark.parametrize("model", ["klein-4b", "chroma"])
def test_vram_tiers_bench_plans_other_model_families(model):
    out = _run("vram_tiers.py", "--model", model)
    assert any(line.startswith(model) and "ESTIMATED" in line for line in out.splitlines()), out
    rows = [line.split() for line in out.splitlines() if line.split()[:2] in (["16", "GB"], ["12", "GB"])]
    assert len(rows) == 6 and all(float(cells[-1]) <= float(cells[0]) for cells in rows), out


def test_fullsize_bench_trains_flux2_klein_on_its_own_inputs():
    """The bench's FLUX.2 path (128-channel latents at 1/16, Qwen3-width text, no pooled vector) at klein 4B's depth."""
    out = _run("fullsize.py", "--config", "klein-4b-narrow", "--resolutions", "128", "--formats", "bf16",
               "--steps", "1", "--warmup", "1")
    row = next(line for line in out.splitlines() if line.startswith("| 128 | bf16 |"))
    assert float(row.strip("|").split("|")[2]) > 0, row


def test_fullsize_bench_runs_the_speed_switches():
    out = _run("fullsize.py", "--config", "flux-dev-narrow", "--resolutions", "128", "--formats", "bf16",
               "--steps", "1", "--warmup", "1", "--fp8-matmul")   # compile_blocks: tests/core/test_speed_switches.py
    assert "base_weights fp8" in out and "compile_blocks False, fp8_matmul True" in out
    row = next(line for line in out.splitlines() if line.startswith("| 128 | bf16 |"))
    assert float(row.strip("|").split("|")[2]) > 0, row  # trained (fp8 copy for the fp8 matmuls), finite losses


def test_memory_trace_finds_what_is_alive_at_the_peak():
    """A recorded CUDA trace (as torch.cuda.memory._snapshot() gives it) replayed: the peak's blocks by allocating
    code, innermost frame outside PyTorch."""
    sys.path.insert(0, str(BENCH))
    import memory_trace
    frames = lambda f: [{"filename": "/x/torch/nn/functional.py", "line": 1, "name": "linear"},
                        {"filename": f"/p/{f}", "line": 7, "name": "forward"}]
    gib = 1024 ** 3
    events = [{"action": "alloc", "addr": 1, "size": 2 * gib, "frames": frames("trainer/blocks.py")},
              {"action": "alloc", "addr": 2, "size": gib, "frames": frames("comfy/ops.py")},
              {"action": "free_requested", "addr": 2, "size": gib},
              {"action": "free_completed", "addr": 2, "size": gib},
              {"action": "alloc", "addr": 3, "size": 3 * gib, "frames": frames("comfy/ops.py")},   # the peak: 5 GiB
              {"action": "free_requested", "addr": 3, "size": 3 * gib},
              {"action": "alloc", "addr": 4, "size": gib, "frames": frames("comfy/ops.py")}]
    rows = memory_trace.alive_at_peak(events, before=gib // 2)
    assert rows == [("allocated before the run (the MODEL's weights)", 0.5), ("comfy/ops.py:7 forward", 3.0),
                    ("trainer/blocks.py:7 forward", 2.0)]
    # blocks from before the trace that it frees (ComfyUI moving the MODEL out for a training copy) leave the count
    moved_out = [{"action": "free_requested", "addr": 99, "size": 4 * gib},
                 {"action": "free_completed", "addr": 99, "size": 4 * gib}]
    rows = memory_trace.alive_at_peak(moved_out + events, before=5 * gib)
    assert rows[0] == ("allocated before the run (the MODEL's weights)", 1.0) and rows[1] == ("comfy/ops.py:7 forward", 3.0)
    assert memory_trace.alive_at_peak(events[:1] + moved_out, before=5 * gib) == [
        ("allocated before the run (the MODEL's weights)", 5.0), ("trainer/blocks.py:7 forward", 2.0)]  # peak: before it left


def test_vram_tiers_bench_counts_each_reference_image():
    """Edit pairs: every reference adds the image's tokens, so the estimated rest of the memory grows with each."""
    rest = []
    for references in ("0", "1", "2"):
        out = _run("vram_tiers.py", "--model", "klein-4b", "--references", references)
        line = next(line for line in out.splitlines() if line.strip().startswith("as loaded  1024:"))
        rest.append(float(line.split("rest")[1].split("=")[0]))
        assert (f"image + {references} reference image(s)" in out) == (references != "0"), out
    assert rest[0] < rest[1] < rest[2], rest
