"""FLUX.1-dev at full size through the pack's real trainer: seconds per step, peak VRAM and peak system RAM per
resolution x weight format, optionally against ComfyUI's native TrainLoraNode, and on simulated smaller cards.

    COMFYUI_PATH=<ComfyUI> <venv>/bin/python bench/fullsize.py [--resolutions 512 768 1024] [--formats bf16 fp8_e4m3fn]
        [--steps 6] [--warmup 2] [--rank 16] [--native] [--card-gb 16] [--config flux-dev | flux-dev-narrow | klein-4b | klein-9b | chroma]
        [--base-weights "as loaded" | fp8 | nf4 | auto] [--vram auto | "24 GB" | "16 GB" | "12 GB" | "8 GB"]
        [--gpu-weights-gb 0] [--compile-blocks] [--fp8-matmul] [--memory-trace]

Each configuration runs in its own process (clean peak statistics, a fresh ComfyUI). The model is ComfyUI's Flux with
flux1-dev's config and random weights (bench/flux_configs.py), loaded the way UNETLoader loads it; the inputs have the
real shapes (16-channel latents, 512 T5 tokens). ``--card-gb N`` simulates an N GB card on a bigger GPU: PyTorch may
allocate only N GB (``torch.cuda.set_per_process_memory_fraction``) and ComfyUI's free-memory view is reduced to match
(its ``--reserve-vram``), so ComfyUI's partial loading behaves as on that card. Without CUDA it runs on the CPU (use
``--config flux-dev-narrow``: FLUX.1-dev's depth and input widths at a narrow hidden width) to prove the bench works.
``--memory-trace`` (CUDA) records every allocation of the run (``torch.cuda.memory._record_memory_history``), writes the
snapshot next to the bench (open it at pytorch.org/memory_viz) and prints what is alive at the peak, grouped by the
code that allocated it (bench/memory_trace.py).
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))
sys.path.insert(0, str(HERE))
GB = 1024 ** 3
CARDS = (24, 16, 12, 8)
FLUX1_CONFIGS = ("flux-dev", "flux-dev-narrow", "tiny")   # what --native (TrainLoraNode on FLUX.1 inputs) can time


def _boot(card_gb):
    import importlib

    import torch

    import comfy_env
    comfy_env.boot(cpu=not torch.cuda.is_available())
    import harness
    harness.setup(Path(tempfile.mkdtemp(prefix="fluxlora_fullsize_")))
    import flux_configs
    flux_configs.add_tiny_configs()   # 'tiny' / 'klein-tiny': the tests' tiny models (the GPU bundle's rehearsal)
    if card_gb and torch.cuda.is_available():
        import comfy.model_management as mm
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, card_gb * GB / total))
        mm.EXTRA_RESERVED_VRAM += max(0, total - int(card_gb * GB))  # what ComfyUI's --reserve-vram does
    return lambda name: importlib.import_module(f"{harness.loaded_pack().__name__}.trainer.{name}")


def _settings(trainer, args, steps):
    return trainer("settings").TrainSettings(steps=steps, learning_rate=1e-4, rank=args.rank, batch_size=1,
                                             caption_dropout=0.0, save_every=0, base_weights=args.base_weights,
                                             vram=args.vram, gpu_weights_gb=args.gpu_weights_gb,
                                             compile_blocks=args.compile_blocks, fp8_matmul=args.fp8_matmul)


def run_ours(args):
    import torch
    trainer = _boot(args.card_gb)
    import flux_configs
    cuda = torch.cuda.is_available()
    t = time.perf_counter()
    model = flux_configs.build_flux(flux_configs.CONFIGS[args.config], args.format, "cuda" if cuda else "cpu")
    build = time.perf_counter() - t
    examples = flux_configs.random_examples(trainer("examples").Example, 4, args.resolution,
                                            **flux_configs.example_shapes(flux_configs.CONFIGS[args.config]))
    settings = _settings(trainer, args, args.warmup + args.steps)
    # what the memory plan (the node's estimate) expects of this run, to set against the measured peak
    plan = trainer("memory_plan").plan_run(model, settings, trainer("loop").largest_image_tokens(examples, trainer("loop").patch_size(model)))
    stamps = []

    class Stamps(trainer("loop").TrainingHooks):
        def on_step(self, *a):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before_run = torch.cuda.memory_allocated()   # the MODEL's weights, allocated before the trace starts
        if args.memory_trace:
            torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks="python")
    start = time.perf_counter()
    with torch.inference_mode():
        lora = trainer("loop").train_flux_lora(model, examples, settings, Stamps())
    trace = {}
    if cuda and args.memory_trace:
        import memory_trace
        snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        path = HERE / f"memory_trace_{args.config}_{args.format}_{args.resolution}.pickle"
        with open(path, "wb") as f:
            import pickle
            pickle.dump(snapshot, f)
        trace = {"trace_file": str(path), "at_peak": memory_trace.alive_at_peak(snapshot["device_traces"][0], before_run)}
    steps = [b - a for a, b in zip(stamps[args.warmup - 1:], stamps[args.warmup:])] if args.warmup else \
        [stamps[0] - start] + [b - a for a, b in zip(stamps, stamps[1:])]
    return {"s_per_step": statistics.median(steps), "first_step_s": stamps[0] - start, "build_s": build,
            "loss_finite": all(v == v and abs(v) != float("inf") for v in lora.losses), "skipped": lora.info.skipped_steps,
            "plan_base_weights": plan.base_weights, "plan_peak_gb": plan.peak / GB,
            "plan_gpu_weights_gb": plan.gpu_weight_bytes / GB, "plan_weights_gb": plan.weight_bytes / GB, **trace}


def run_native(args):
    """ComfyUI's own TrainLoraNode on the same model and inputs (bf16 training, checkpointing, rank, AdamW)."""
    import torch
    _boot(args.card_gb)
    import comfy.ldm.flux.math as flux_math
    import flux_configs
    from comfy_extras.nodes_train import TrainLoraNode
    cuda = torch.cuda.is_available()
    config = flux_configs.CONFIGS[args.config]
    model = flux_configs.build_flux(config, args.format, "cuda" if cuda else "cpu")
    if hasattr(model, "cached_patcher_init"):
        # ComfyUI >= 0.3x: TrainLoraNode deep-copies its MODEL by calling the loader again (cached_patcher_init, set by
        # UNETLoader); the bench's "loader" builds the same random weights again
        model.cached_patcher_init = (lambda disable_dynamic=False: flux_configs.build_flux(
            config, args.format, "cuda" if cuda else "cpu"), ())
    shapes = flux_configs.example_shapes(config)
    g = torch.Generator().manual_seed(0)
    side = args.resolution // shapes["downscale"]
    latents = {"samples": torch.randn(4, shapes["channels"], side, side, generator=g)}
    positive = [[[torch.randn(1, flux_configs.T5_TOKENS, shapes["text_dim"], generator=g) * 0.1,
                  {"pooled_output": torch.randn(1, shapes["pooled_dim"], generator=g) * 0.1, "guidance": 1.0}]]
                for _ in range(4)]
    inputs = {i.id: [getattr(i, "default", None)] for i in TrainLoraNode.define_schema().inputs}
    inputs.update(model=[model], latents=[latents], positive=positive, batch_size=[1], learning_rate=[1e-4],
                  rank=[args.rank], optimizer=["AdamW"], loss_function=["MSE"], seed=[0], training_dtype=["bf16"],
                  lora_dtype=["bf16"], algorithm=["LoRA"], gradient_checkpointing=[True])
    note = ""

    def train(steps):
        return TrainLoraNode.execute(**dict(inputs, steps=[steps]))
    try:
        train(1)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # v0.8.0: comfy-kitchen's apply_rope has no autograd formula: swap in the torch one
        note = f"RoPE workaround ({type(e).__name__})"
        flux_math.apply_rope = flux_configs.torch_rope
        train(1)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stamps = []

    def on_optimizer_step(*_):   # one optimizer step per training step (batch 1, no accumulation)
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    from torch.optim.optimizer import register_optimizer_step_post_hook
    hook = register_optimizer_step_post_hook(on_optimizer_step)
    try:
        train(args.warmup + args.steps)
    finally:
        hook.remove()
    steps = [b - a for a, b in zip(stamps[args.warmup - 1:], stamps[args.warmup:])] if args.warmup else \
        [b - a for a, b in zip(stamps, stamps[1:])]
    return {"s_per_step": statistics.median(steps), "note": note}


def child(args):
    import torch
    try:
        out = run_native(args) if args.child == "native" else run_ours(args)
    except torch.OutOfMemoryError as e:
        out = {"oom": str(e).splitlines()[0][:200]}
    if torch.cuda.is_available():
        out.update(peak_allocated_gb=torch.cuda.max_memory_allocated() / GB,
                   peak_reserved_gb=torch.cuda.max_memory_reserved() / GB, gpu=torch.cuda.get_device_name(0))
    out["peak_ram_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print("RESULT " + json.dumps(out), flush=True)


def _run_child(kind, args, resolution, fmt, timeout=None):
    """One configuration in a fresh process: its RESULT dict, or {"error": ...} (also when it ran past ``timeout`` s)."""
    cmd = [sys.executable, __file__, "--child", kind, "--resolutions", str(resolution), "--formats", fmt, "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--rank", str(args.rank), "--config", args.config,
           "--base-weights", args.base_weights, "--vram", args.vram, "--gpu-weights-gb", str(args.gpu_weights_gb)] + (
        ["--card-gb", str(args.card_gb)] if args.card_gb else []) + [
        f"--{flag}" for flag in ("compile-blocks", "fp8-matmul", "memory-trace") if getattr(args, flag.replace("-", "_"))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1][:200] if (proc.stderr or proc.stdout) else
                f"exit {proc.returncode}"}
    return json.loads(lines[-1][7:])


def _fits(result):
    """Card sizes the measured peak fits: reserved memory plus ~0.5 GiB of CUDA context under the card's size (a "16 GB"
    card has 16 GiB)."""
    peak = result.get("peak_reserved_gb")
    return "/".join(str(c) for c in CARDS if peak is not None and peak + 0.5 <= c) or "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolutions", type=int, nargs="+", default=[512, 768, 1024])
    ap.add_argument("--formats", nargs="+", default=["bf16", "fp8_e4m3fn"])
    ap.add_argument("--steps", type=int, default=6, help="timed steps after warm-up")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--config", default="flux-dev", help="flux-dev, flux-dev-narrow, klein-4b, klein-9b, chroma, or "
                                                         "the tests' tiny / klein-tiny (--native: FLUX.1 only)")
    ap.add_argument("--base-weights", default="as loaded", help="the base_weights setting: as loaded, fp8, nf4, auto")
    ap.add_argument("--vram", default="auto", help="the vram setting (tier): auto, 24 GB, 16 GB, 12 GB, 8 GB")
    ap.add_argument("--gpu-weights-gb", type=float, default=0.0, help="the gpu_weights_gb setting (0: automatic)")
    ap.add_argument("--native", action="store_true", help="also time ComfyUI's TrainLoraNode")
    ap.add_argument("--card-gb", type=float, default=0, help="simulate a card of this many GB (CUDA only)")
    ap.add_argument("--compile-blocks", action="store_true", help="the compile_blocks setting (torch.compile)")
    ap.add_argument("--fp8-matmul", action="store_true", help="the fp8_matmul setting (fp8 base weights, fp8 matmuls)")
    ap.add_argument("--memory-trace", action="store_true", help="record CUDA allocations; print what holds the peak")
    ap.add_argument("--child", choices=["ours", "native"])
    args = ap.parse_args()
    if args.fp8_matmul and args.base_weights == "as loaded":
        args.base_weights = "fp8"   # fp8 matmuls multiply by an fp8 training copy
    if args.child:
        args.resolution, args.format = args.resolutions[0], args.formats[0]
        return child(args)
    if args.native and args.config not in FLUX1_CONFIGS:
        raise SystemExit("--native times ComfyUI's TrainLoraNode on FLUX.1-dev's inputs only; drop it for "
                         f"{args.config}.")
    import comfy_env
    root = comfy_env.find_comfyui()
    version = (root / "comfyui_version.py").read_text().split('"')[1]
    print(f"# bench/fullsize.py — ComfyUI {version}, config {args.config}, rank {args.rank}, batch 1, checkpointing, "
          f"AdamW, base_weights {args.base_weights}, vram {args.vram}, gpu_weights_gb {args.gpu_weights_gb:g}, "
          f"compile_blocks {args.compile_blocks}, fp8_matmul {args.fp8_matmul}, "
          f"{args.warmup} warm-up + {args.steps} timed steps"
          + (f", simulated {args.card_gb:g} GB card" if args.card_gb else ""))
    print(f"# command: {' '.join([Path(sys.executable).name] + sys.argv)}")
    print("| resolution | weights | s/step (median) | first step s | peak VRAM alloc / reserved GB | peak RAM GB | fits (GB) "
          "| native s/step | native / ours |")
    print("|---|---|---|---|---|---|---|---|---|")
    gpu = None
    for fmt in args.formats:
        for res in args.resolutions:
            ours = _run_child("ours", args, res, fmt)
            gpu = ours.get("gpu", gpu)
            native = _run_child("native", args, res, fmt) if args.native else {}
            if "s_per_step" in ours:
                vram = (f"{ours['peak_allocated_gb']:.1f} / {ours['peak_reserved_gb']:.1f}" if "peak_allocated_gb" in ours
                        else "- (CPU)")
                cols = [f"{ours['s_per_step']:.3f}", f"{ours['first_step_s']:.1f}", vram, f"{ours['peak_ram_gb']:.1f}",
                        _fits(ours) if "peak_reserved_gb" in ours else "-"]
                if not ours["loss_finite"]:
                    cols[0] += " (non-finite loss)"
            else:
                cols = [ours.get("oom") and "OOM" or f"failed: {ours.get('error')}", "", "", "", "-"]
            if "s_per_step" in native:
                cols += [f"{native['s_per_step']:.3f}" + (f" ({native['note']})" if native["note"] else ""),
                         f"{native['s_per_step'] / ours['s_per_step']:.2f}x" if "s_per_step" in ours else ""]
            elif native:
                cols += ["OOM" if native.get("oom") else f"failed: {native.get('error')}", ""]
            else:
                cols += ["", ""]
            print(f"| {res} | {fmt} | " + " | ".join(cols) + " |", flush=True)
            if ours.get("at_peak"):
                print(f"#   alive at the peak ({ours['trace_file']}):")
                for where, gib in ours["at_peak"]:
                    print(f"#     {gib:6.2f} GiB  {where}")
    print(f"# device: {gpu or 'CPU'}; measured {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
