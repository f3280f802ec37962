"""What the training methods do on the tiny FLUX (CPU): (1) how fast each initialisation (default / lora_ga / pissa /
olora) brings the loss down, and what the initialisation costs; (2) how much each preservation mode keeps the model's
prediction for the class prompt from drifting, and what it costs in fit to the training images; (3) what an EMA of
the LoRA weights does to the validation loss on held-out images (fixed noise and noise levels).

All runs use the same data, seed and noise draws, so the loss curves are paired step by step. The loss compared is the
training loss averaged over a window of steps (one step's loss is very noisy: the noise level σ is drawn per step).

    COMFYUI_PATH=<ComfyUI> ~/.venvs/comfyui-fluxlora-<version>/bin/python bench/training_methods.py [--steps 200] [--only init|preservation|ema]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))
sys.path.insert(0, str(HERE))


def window_means(losses, window):
    return [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
            for i in range(len(losses))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--only", choices=("init", "preservation", "ema"), help="one part of the comparison")
    args = ap.parse_args()
    import importlib

    import comfy_env
    comfy_env.boot()
    import harness
    import torch
    import training_data
    from validation_noise import images
    state = harness.setup(Path(tempfile.mkdtemp(prefix="fluxlora_methods_")))
    trainer = lambda name: importlib.import_module(f"{harness.loaded_pack().__name__}.trainer.{name}")
    run, settings_mod, examples_mod = trainer("run"), trainer("settings"), trainer("examples")
    model, clip, vae = training_data.load_models(state)
    pixels, captions = images(args.images)
    dataset = trainer("dataset").dataset_from_images(pixels, captions)
    base = settings_mod.TrainSettings(steps=args.steps, learning_rate=args.lr, rank=16, caption_dropout=0.0)
    print(f"tiny FLUX on CPU, {args.images} images, {args.steps} steps, rank 16, lr {args.lr}, adamw, "
          f"loss = mean of the last {args.window} steps")

    if args.only in (None, "init"):
        initialisations(args, run, model, clip, vae, dataset, base)
    if args.only in (None, "preservation"):
        preservation(args, trainer, run, examples_mod, model, clip, vae, dataset, base, images)
    if args.only in (None, "ema"):
        ema(args, run, model, clip, vae, dataset, base)


def initialisations(args, run, model, clip, vae, dataset, base):
    import torch
    curves, init_seconds, wall = {}, {}, {}
    for init in ("default", "lora_ga", "pissa", "olora"):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = run.train_run(model, clip, vae, dataset, base.with_changes(init=init))
        wall[init] = time.perf_counter() - t0
        curves[init] = window_means(out.lora.losses, args.window)
        init_seconds[init] = out.lora.info.init_seconds or 0.0
    target = curves["default"][-1]
    print(f"\n  init      loss@{args.steps // 4:<4} loss@{args.steps // 2:<4} final    steps to default's final   "
          "init time   run time")
    for init, curve in curves.items():
        reached = next((i + 1 for i, v in enumerate(curve) if i + 1 >= args.window and v <= target), None)
        print(f"  {init:<9} {curve[args.steps // 4 - 1]:.4f}   {curve[args.steps // 2 - 1]:.4f}   {curve[-1]:.4f}   "
              f"{str(reached) if reached else 'not reached':<26} {init_seconds[init]:6.2f} s   {wall[init]:6.1f} s")



def preservation(args, trainer, run, examples_mod, model, clip, vae, dataset, base, images):
    """Drift of the prediction for the class prompt, LoRA vs the untouched model, on fixed inputs."""
    import torch
    class_prompt = "a pattern"
    encoder = examples_mod.Encoder(model, clip, vae)
    with torch.inference_mode():
        context, pooled = encoder.text(class_prompt)
        shape = encoder.examples(examples_mod.sources_from_dataset(dataset))[0].latent.shape
    g = torch.Generator().manual_seed(123)
    x = torch.randn(8, *shape, generator=g)
    sigmas = torch.linspace(0.1, 0.9, 8)

    def prediction(patcher):
        import comfy.model_management as mm
        with torch.inference_mode():
            mm.load_models_gpu([patcher])
            out = trainer("predict").predict_velocity(patcher, x, sigmas, context[None].expand(8, -1, -1),
                                                      pooled[None].expand(8, -1), 1.0)
        mm.unload_all_models()
        return out

    reference = prediction(model.clone())
    reg_pixels, _ = images(args.images, seed=7)
    regularization = trainer("dataset").dataset_from_images(reg_pixels, [class_prompt] * args.images)
    print(f"\n  preservation ('{class_prompt}')     final training loss   class-prompt drift (MSE vs untouched model)")
    for mode in ("off", "regularization images", "differential output"):
        settings = base.with_changes(preservation=mode, class_prompt=class_prompt if mode != "off" else "")
        with torch.inference_mode():
            out = run.train_run(model, clip, vae, dataset, settings,
                                regularization=regularization if mode == "regularization images" else None)
        drift = torch.mean((prediction(out.model) - reference) ** 2).item()
        print(f"  {mode:<34} {window_means(out.lora.losses, args.window)[-1]:.4f}                {drift:.3e}")



def ema(args, run, model, clip, vae, dataset, base):
    """Validation loss (2 held-out images, every 10 steps) without and with an EMA of the LoRA weights."""
    import torch
    settings = base.with_changes(validation_images=2, validation_every=10)
    print(f"\n  ema              val@{args.steps // 4:<4} val@{args.steps // 2:<4} val@{args.steps:<4} best (step)     "
          f"final training loss")
    for label, changes in (("off", {}), ("on, decay 0.9", {"ema": True, "ema_decay": 0.9}),
                           ("on, decay 0.99", {"ema": True, "ema_decay": 0.99})):
        with torch.inference_mode():
            out = run.train_run(model, clip, vae, dataset, settings.with_changes(**changes))
        val = dict(out.lora.info.validation)
        best = min(val, key=val.get)
        print(f"  {label:<16} {val[args.steps // 4]:.4f}   {val[args.steps // 2]:.4f}   {val[args.steps]:.4f}   "
              f"{val[best]:.4f} ({best:<4})   {window_means(out.lora.losses, args.window)[-1]:.4f}")


if __name__ == "__main__":
    main()
