"""Seconds per training step on the tiny FLUX (CPU): our trainer vs a bare forward+backward+step of the same
LoRA'd model vs ComfyUI's native TrainLoraNode (same steps / rank / batch). Prints ratios and peak RSS.

    COMFYUI_PATH=<ComfyUI> ~/.venvs/comfyui-fluxlora-<version>/bin/python bench/step_speed.py [--steps 40] [--rank 16]

Ours and bare alternate in one process (3 rounds each, median of medians): separate processes differ by more
than the overhead being measured. The native node runs in its own process. Target: ours <= 1.10x the bare step.
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


def _setup(root):
    """ComfyUI booted with the tiny models and the pack loaded; returns (trainer module getter, model, examples)."""
    import importlib

    import comfy_env
    comfy_env.boot()
    import harness
    import training_data
    state = harness.setup(Path(root))
    pack = harness.loaded_pack()
    model, examples = training_data.model_and_examples(state)
    return (lambda name: importlib.import_module(f"{pack.__name__}.trainer.{name}")), model, examples


def run_ours(args, root):
    import torch
    trainer, model, examples = _setup(root)
    stamps = []

    class Stamps(trainer("loop").TrainingHooks):
        def on_step(self, *a):
            stamps.append(time.perf_counter())
    settings = trainer("settings").TrainSettings(steps=args.steps, learning_rate=1e-4, batch_size=args.batch,
                                                 rank=args.rank, caption_dropout=0.0)
    with torch.inference_mode():
        trainer("loop").train_flux_lora(model, examples, settings, Stamps())
    return [b - a for a, b in zip(stamps[2:], stamps[3:])]


def run_bare(args, root):
    import torch
    trainer, model, examples = _setup(root)
    loop, predict = trainer("loop"), trainer("predict").predict_velocity
    settings = trainer("settings").TrainSettings(batch_size=args.batch, rank=args.rank)
    times = []
    with torch.inference_mode(False), loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        opt = torch.optim.AdamW(lora.parameters(), lr=1e-4, weight_decay=1e-4)
        x0 = torch.stack([examples[i % len(examples)].latent for i in range(args.batch)])
        ctx = torch.stack([examples[i % len(examples)].context for i in range(args.batch)])
        pooled = torch.stack([examples[i % len(examples)].pooled for i in range(args.batch)])
        noise, sigmas = torch.randn_like(x0), torch.rand(args.batch)
        xt = (1 - sigmas[:, None, None, None]) * x0 + sigmas[:, None, None, None] * noise
        for _ in range(args.steps):
            t = time.perf_counter()
            loss = torch.nn.functional.mse_loss(predict(patcher, xt, sigmas, ctx, pooled, 1.0), noise - x0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lora.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
    return times[3:]


def native_inputs(model, latents, positive, args, steps):
    """TrainLoraNode's inputs, from its own schema defaults (they differ between ComfyUI versions: v0.33 added
    quantized_backward, checkpoint_depth, offloading, bypass_mode) with the settings this bench compares."""
    from comfy_extras.nodes_train import TrainLoraNode
    inputs = {i.id: [getattr(i, "default", None)] for i in TrainLoraNode.define_schema().inputs}
    inputs.update(model=[model], latents=[latents], positive=positive, batch_size=[args.batch], steps=[steps],
                  learning_rate=[1e-4], rank=[args.rank], optimizer=["AdamW"], loss_function=["MSE"], seed=[0],
                  training_dtype=["fp32"], lora_dtype=["fp32"], algorithm=["LoRA"], gradient_checkpointing=[True])
    return inputs


def run_native(args, root):
    import torch
    _, model, examples = _setup(root)
    import comfy.ldm.flux.math as flux_math
    from comfy_extras.nodes_train import TrainLoraNode
    latents = {"samples": torch.stack([e.latent for e in examples]) / 0.3611 + 0.1159}  # raw VAE latents
    positive = [[[e.context[None], {"pooled_output": e.pooled[None], "guidance": 1.0}]] for e in examples]
    note = ""

    def train(steps):
        return TrainLoraNode.execute(**native_inputs(model, latents, positive, args, steps))
    try:
        train(2)
    except Exception as e:  # v0.8.0: comfy-kitchen's apply_rope has no autograd formula
        note = f"stock node failed ({type(e).__name__}: {str(e)[:90]}); timed with the pure-torch RoPE swapped in"
        from flux_configs import torch_rope
        flux_math.apply_rope = torch_rope
        train(2)
    t = time.perf_counter()
    train(2)
    short = time.perf_counter() - t
    t = time.perf_counter()
    train(args.steps)
    long = time.perf_counter() - t
    return {"per_step": (long - short) / (args.steps - 2), "note": note}


def child(mode, args):
    root = tempfile.mkdtemp(prefix=f"fluxlora_bench_{mode}_")
    if mode == "native":
        out = run_native(args, root)
    else:
        rounds = {"ours": [], "bare": []}
        for _ in range(args.rounds):
            for name, fn in (("ours", run_ours), ("bare", run_bare)):
                rounds[name].append(statistics.median(fn(args, root)))
        out = {name: statistics.median(v) for name, v in rounds.items()}
        out["rounds"] = rounds
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def _run_child(mode, args):
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--rank", str(args.rank),
                           "--batch", str(args.batch), "--rounds", str(args.rounds)], capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{mode} failed:\n{(proc.stderr or proc.stdout)[-1500:]}")
    return json.loads(lines[-1][7:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", choices=["trainer", "native"])
    args = ap.parse_args()
    if args.child:
        return child(args.child, args)
    ours_bare, native = _run_child("trainer", args), _run_child("native", args)
    bare = ours_bare["bare"]
    import comfy_env
    root = comfy_env.find_comfyui()
    version = (root / "comfyui_version.py").read_text().split('"')[1]
    print(f"ComfyUI {version} ({root}); tiny FLUX on CPU, {args.steps} steps x {args.rounds} rounds, rank {args.rank}, batch {args.batch}")
    print(f"  bare    {bare * 1000:8.1f} ms/step  1.00x   (rounds: {[round(v * 1000, 1) for v in ours_bare['rounds']['bare']]})")
    print(f"  ours    {ours_bare['ours'] * 1000:8.1f} ms/step  {ours_bare['ours'] / bare:4.2f}x   "
          f"(rounds: {[round(v * 1000, 1) for v in ours_bare['rounds']['ours']]})  peak RSS {ours_bare['peak_rss_mb']:.0f} MB (ours+bare process)")
    print(f"  native  {native['per_step'] * 1000:8.1f} ms/step  {native['per_step'] / bare:4.2f}x   peak RSS {native['peak_rss_mb']:.0f} MB  {native['note']}")


if __name__ == "__main__":
    main()
