"""How noisy is the validation loss with few images? Measured on the tiny FLUX (CPU) with 10 synthetic images, 2 held
out: (a) the spread of the validation loss of one LoRA over different fixed-noise draws (what a single evaluation can be
off by), (b) its spread over different held-out pairs, against (c) how much the validation loss moves during training.

    COMFYUI_PATH=<ComfyUI> ~/.venvs/comfyui-fluxlora-<version>/bin/python bench/validation_noise.py [--steps 200]
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))


def images(n, size=64, seed=0):
    import numpy as np
    import torch
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for i in range(n):
        a, b, c = rng.uniform(0.2, 1.0, 3)
        out.append(np.stack([a * y, b * x, c * (1 - y) * x], -1))
    return torch.tensor(np.stack(out), dtype=torch.float32), [f"tok_test a pattern number {i}" for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--held-out", type=int, default=2)
    args = ap.parse_args()
    import importlib

    import comfy_env
    comfy_env.boot()
    import harness
    import torch
    import training_data
    state = harness.setup(Path(tempfile.mkdtemp(prefix="fluxlora_valnoise_")))
    trainer = lambda name: importlib.import_module(f"{harness.loaded_pack().__name__}.trainer.{name}")
    model, clip, vae = training_data.load_models(state)
    pixels, captions = images(args.images)
    dataset = trainer("dataset").dataset_from_images(pixels, captions)
    settings = trainer("settings").TrainSettings(steps=args.steps, learning_rate=5e-3, rank=16, caption_dropout=0.0,
                                                 validation_images=args.held_out, validation_every=args.steps // 10)
    with torch.inference_mode():
        out = trainer("run").train_run(model, clip, vae, dataset, settings)
        examples = trainer("examples").Encoder(model, clip, vae).examples(trainer("examples").sources_from_dataset(dataset))
    curve = [v for _, v in out.lora.info.validation]
    # the trained LoRA's validation loss over 20 noise draws (same held-out pair), and over 20 held-out pairs
    loop, validation = trainer("loop"), trainer("validation")
    with torch.inference_mode(False), loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        state_dict = {k: v for k, v in out.lora.items()}
        for name, layer in lora.layers.items():  # load the trained weights into the live adapter
            with torch.no_grad():
                layer.lora_A["default"].weight.copy_(state_dict[f"diffusion_model.{name}.lora_down.weight"])
                layer.lora_B["default"].weight.copy_(state_dict[f"diffusion_model.{name}.lora_up.weight"])
        _, held = validation.split_indices(args.images, args.held_out, settings.seed)
        draws = [validation.ValidationSet.build([examples[i] for i in held], seed).loss(patcher, 1.0, "cpu")
                 for seed in range(20)]
        # other image pairs (some were trained on): how much the level depends on which images are held out
        pairs = [validation.ValidationSet.build([examples[i] for i in validation.split_indices(args.images, args.held_out,
                                                                                               s)[1]], 0).loss(patcher, 1.0, "cpu")
                 for s in range(20)]
    rel = lambda values: statistics.pstdev(values) / statistics.mean(values)
    print(f"tiny FLUX on CPU, {args.images} images, {args.held_out} held out, {args.steps} steps, rank 16, lr 5e-3")
    print(f"  validation loss during training: {curve[0]:.4f} -> {curve[-1]:.4f} "
          f"({(curve[-1] - curve[0]) / curve[0] * 100:+.1f}%), min {min(curve):.4f}")
    print(f"  same LoRA, 20 noise draws:     mean {statistics.mean(draws):.4f}, std {statistics.pstdev(draws):.4f} "
          f"({rel(draws) * 100:.1f}% of the mean)")
    print(f"  same LoRA, 20 held-out pairs:  mean {statistics.mean(pairs):.4f}, std {statistics.pstdev(pairs):.4f} "
          f"({rel(pairs) * 100:.1f}% of the mean)")
    steps = [abs(b - a) / a for a, b in zip(curve, curve[1:])]
    print(f"  step-to-step change of the curve: median {statistics.median(steps) * 100:.1f}%")


if __name__ == "__main__":
    main()
