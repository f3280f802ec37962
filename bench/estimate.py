"""Peak training memory of FLUX.1-dev at full size, estimated without a GPU: the pack's real training loop run on fake
tensors (PyTorch's FakeTensorMode: shapes, dtypes and devices, no data, no compute) under a dispatch-mode counter of the
bytes of every tensor alive at each moment. Also counts the FLOPs of a step (FlopCounterMode, in a
separate step).

    COMFYUI_PATH=<ComfyUI> <venv>/bin/python bench/estimate.py [--resolutions 512 768 1024] [--formats bf16 fp8_e4m3fn]
        [--rank 16] [--tflops 400] [--check] [--breakdown]

What it counts: weights (fully loaded), LoRA parameters, gradients and optimizer state, activations saved for backward,
temporaries (ComfyUI's per-layer weight casts, the block being recomputed). What it cannot see: the CUDA context (~0.5
GB), cuBLAS/attention workspaces and the caching allocator's fragmentation (PyTorch's reserved memory is typically
5-15% above its allocated peak), so real peaks are higher; the GPU bench (bench/fullsize.py) measures them.
``--check`` runs the tiny test FLUX both ways (fake, and real on the CPU under the same tracker) and prints the
difference of the two peaks: the fake run must see the same tensors the real one allocates. ``--breakdown`` prints,
under each row, what is alive at the peak grouped by the code that allocated it (the innermost frame outside PyTorch),
in the same form as ``bench/fullsize.py --memory-trace`` prints it from a real GPU trace.
"""
import argparse
import contextlib
import sys
from collections import Counter
import tempfile
import weakref
from pathlib import Path

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))
sys.path.insert(0, str(HERE))
GB = 1024 ** 3


@contextlib.contextmanager
def fake_friendly(trainer):
    """What a data-free run needs: values read back to Python (loss for the log, the finite check) are 0 (1 for
    ``item``, which the optimizer's step count goes through), and the
    first-call comparison of the training blocks with ComfyUI's own (a value check) is skipped; its memory still counts."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor
    blocks = trainer("blocks")
    saved = (FakeTensor.tolist, FakeTensor.item, blocks._verify, torch.utils.swap_tensors)
    swap = torch.utils.swap_tensors

    def tolist(self):
        def zeros(shape):
            return [zeros(shape[1:]) for _ in range(shape[0])] if shape else 0
        return zeros(list(self.shape))

    def item(self):  # 1, not 0: AdamW divides by 1 - beta ** step.item()
        return True if self.dtype == torch.bool else 1
    def swap_or_assign(a, b):  # Module.to() swaps fake parameters, which fails while the fake mode's memo refers to
        try:                   # them; assigning .data (what it does for real tensors) has the same effect here
            swap(a, b)
        except RuntimeError:
            a.data = b.data
    FakeTensor.tolist, FakeTensor.item, blocks._verify = tolist, item, lambda *a, **k: None
    torch.utils.swap_tensors = swap_or_assign
    try:
        yield
    finally:
        FakeTensor.tolist, FakeTensor.item, blocks._verify, torch.utils.swap_tensors = saved


def allocation_site() -> str:
    """'folder/file.py:line function' of the innermost caller outside PyTorch and this script."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/torch/" not in name and name != __file__ and not name.startswith("<"):
            path = Path(name)
            return f"{path.parent.name}/{path.name}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return "torch"


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every tensor storage alive, from what each operator returns (plus the tensors registered
    with ``add``), and the peak of that count. A storage is counted once, until it is freed."""

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._alive = {}
        self.by_site, self.at_peak = Counter(), Counter()   # live bytes by allocating code, now and at the peak

    def add(self, tensor, site=None):
        st = tensor.untyped_storage()
        key = id(st)
        if key in self._alive:
            return
        size = st.nbytes()
        site = site or allocation_site()

        def freed(_, key=key, size=size, site=site):
            if self._alive.pop(key, None) is not None:
                self.current -= size
                self.by_site[site] -= size
        self._alive[key] = weakref.ref(st, freed)
        self.current += size
        self.by_site[site] += size
        if self.current > self.peak:
            self.peak, self.at_peak = self.current, self.by_site.copy()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.add(t)
        return out


def traced_step(trainer, model, examples, settings, fake: bool):
    """Training steps of the real loop under LiveBytes (then one under FlopCounterMode when fake): (peak bytes, bytes of
    the frozen weights, bytes of LoRA parameters + gradients + AdamW state, FLOPs of one step incl. the recompute,
    {allocating code: bytes alive at the peak})."""
    from torch.utils.flop_counter import FlopCounterMode
    params = list(model.model.diffusion_model.parameters())
    weights = sum(p.nbytes for p in params)
    tracker = LiveBytes()
    for p in params:
        tracker.add(p, "the MODEL's weights (loaded before training)")
    flops = FlopCounterMode(display=False)
    with tracker, torch.inference_mode():
        lora = trainer("loop").train_flux_lora(model, examples, settings)
    trainable = sum(v.numel() for k, v in lora.items() if k.endswith(("lora_up.weight", "lora_down.weight")))
    if fake:  # a separate step: FlopCounterMode keeps the tensors it sees alive, which would inflate the peak
        with flops, torch.inference_mode():
            trainer("loop").train_flux_lora(model, examples, settings.with_changes(steps=1))
    return tracker.peak, weights, trainable * 4 * 4, (flops.get_total_flops() if fake else None), tracker.at_peak


def estimate(trainer, config, fmt, resolution, rank, fake_mode):
    import flux_configs
    with fake_mode:
        model = flux_configs.build_flux(config, fmt, "cpu", randomize=False, as_on_gpu=True)
        examples = flux_configs.random_examples(trainer("examples").Example, 1, resolution,
                                                **flux_configs.example_shapes(config))
    settings = trainer("settings").TrainSettings(steps=2, rank=rank, caption_dropout=0.0, save_every=0)
    with fake_mode, fake_friendly(trainer):
        return traced_step(trainer, model, examples, settings, fake=True)


def check(trainer, resolution=256):
    """The tiny test FLUX's config, built the same way twice: peak of the real CPU run vs the fake trace."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    import flux_configs
    import tiny_models
    config = tiny_models.tiny_flux_config()
    settings = trainer("settings").TrainSettings(steps=2, rank=16, caption_dropout=0.0, save_every=0)
    make = lambda: flux_configs.random_examples(trainer("examples").Example, 2, resolution, text_dim=config["context_in_dim"],
                                                pooled_dim=config["vec_in_dim"])
    real = traced_step(trainer, flux_configs.build_flux(config, "bf16", "cpu"), make(), settings, fake=False)[0]
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode, fake_friendly(trainer):
        fake = traced_step(trainer, flux_configs.build_flux(config, "bf16", "cpu", randomize=False), make(), settings,
                           fake=True)[0]
    return real, fake


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolutions", type=int, nargs="+", default=[512, 768, 1024])
    ap.add_argument("--formats", nargs="+", default=["bf16", "fp8_e4m3fn"])
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--config", default="flux-dev", help="flux-dev, flux-dev-narrow, klein-4b, klein-9b or chroma")
    ap.add_argument("--tflops", type=float, default=400.0,
                    help="sustained dense bf16 TFLOP/s assumed for the time column (H100 SXM: ~400 at 40%% of peak)")
    # FlopCounterMode counts the matmuls it sees; on this CPU trace that is less than the analytic count of a
    # checkpointed step (~370 TFLOP at 1024px, issue #11): the time column is a lower bound, not a prediction
    ap.add_argument("--check", action="store_true", help="compare fake and real peaks on the tiny test FLUX")
    ap.add_argument("--breakdown", action="store_true", help="print what holds each peak, by allocating code")
    args = ap.parse_args()
    import importlib

    import comfy_env
    comfy_env.boot()
    import harness
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    import flux_configs
    state = harness.setup(Path(tempfile.mkdtemp(prefix="fluxlora_estimate_")))
    trainer = lambda name: importlib.import_module(f"{harness.loaded_pack().__name__}.trainer.{name}")
    torch.set_default_dtype(torch.float32)
    if args.check:
        real, fake = check(trainer)
        print(f"tiny FLUX, 2 steps on the CPU: real peak {real / 2**20:.2f} MiB, fake-traced peak {fake / 2**20:.2f} MiB "
              f"({(fake - real) / real * 100:+.2f}%)")
    print(f"# bench/estimate.py — ESTIMATED (fake-tensor trace of the pack's training loop, no GPU), config {args.config}, "
          f"rank {args.rank}, batch 1, checkpointing, AdamW, bf16 compute as on a GPU; time = counted FLOPs / {args.tflops:g} "
          "TFLOP/s, a lower bound (the counter misses part of the step)")
    print("| resolution | weights | peak GB (allocated) | frozen weights GB | LoRA + grads + AdamW GB | "
          "activations, casts, temporaries GB | TFLOP/step | s/step at the assumed rate |")
    print("|---|---|---|---|---|---|---|---|")
    for fmt in args.formats:
        for res in args.resolutions:
            peak, weights, lora, flops, at_peak = estimate(trainer, flux_configs.CONFIGS[args.config], fmt, res, args.rank,
                                                  FakeTensorMode(allow_non_fake_inputs=True))
            print(f"| {res} | {fmt} | {peak / GB:.2f} | {weights / GB:.2f} | {lora / GB:.2f} | "
                  f"{(peak - weights - lora) / GB:.2f} | {flops / 1e12:.1f} | {flops / 1e12 / args.tflops:.2f} |", flush=True)
            if args.breakdown:
                print("#   alive at the peak (estimated):")
                for site, size in at_peak.most_common(12):
                    print(f"#     {size / GB:6.2f} GiB  {site}")


if __name__ == "__main__":
    main()
