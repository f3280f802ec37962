"""What each VRAM tier does at full size: the pack's memory plan (trainer/memory_plan.py) for the real architecture of
FLUX.1-dev, FLUX.2 [klein] 4B / 9B or Chroma (built on the meta device: no memory, no GPU), rank 16, batch 1,
gradient checkpointing.

    python bench/vram_tiers.py [--model flux-dev|klein-4b|klein-9b|chroma] [--loaded bf16|fp8] [--rank 16]
                               [--references N | --kontext]

Every number printed is an ESTIMATE of the planner's model (fitted to bench/estimate.py's fake-tensor traces), not a
measurement; bench/fullsize.py measures on a GPU.
"""
import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("flux-dev", "klein-4b", "klein-9b", "chroma"), default="flux-dev")
    parser.add_argument("--loaded", choices=("bf16", "fp8"), default="bf16", help="how the MODEL was loaded")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--references", type=int, default=0,
                        help="edit pairs (Kontext, FLUX.2): reference images per target, each adds the image's tokens")
    parser.add_argument("--kontext", action="store_true", help="Kontext pairs: --references 1")
    args = parser.parse_args()
    references = max(args.references, 1 if args.kontext else 0)
    tokens = lambda px: (px // 16) ** 2 * (1 + references)
    from fullsize import _boot
    trainer = _boot(None)
    plan_mod, lora_mod = trainer("memory_plan"), trainer("lora")
    from flux_configs import PLANNED_MODELS, meta_diffusion_model
    dtype = torch.bfloat16 if args.loaded == "bf16" else torch.float8_e4m3fn
    dm = meta_diffusion_model(PLANNED_MODELS[args.model], dtype)
    facts = plan_mod.diffusion_model_facts(dm)
    trainable = lora_mod.trainable_count(dm, lora_mod.LoraSettings(rank=args.rank, alpha=args.rank))
    gib = plan_mod.GIB
    params = sum(p.numel() for p in dm.parameters())
    print(f"{args.model} ({params / 1e9:.2f} B parameters) loaded {args.loaded}, rank {args.rank} ({trainable / 1e6:.1f} M LoRA parameters), batch 1, "
          "gradient checkpointing" + (f", edit pairs (image + {references} reference image(s) of its size)"
                                     if references else "")
          + ". ESTIMATED by the pack's memory plan.")
    print(f"{'tier':>6} {'px':>5} {'base weights':>12} {'in VRAM GiB':>11} {'streamed GiB':>12} {'peak GiB':>8}")
    for tier in plan_mod.VRAM_TIERS[1:]:
        for px in (512, 768, 1024):
            try:
                plan = plan_mod.make_plan(facts, tier=tier, base_weights="auto", gpu_weights_gb=0.0,
                                          image_tokens=tokens(px), batch=1, checkpointing=True,
                                          trainable_params=trainable, available=80 * gib, free_ram=64 * gib,
                                          on_gpu=True)
            except plan_mod.NotEnoughMemory as e:
                print(f"{tier:>6} {px:>5} refused: {e}")
                continue
            print(f"{tier:>6} {px:>5} {plan.base_weights:>12} {plan.gpu_weight_bytes / gib:>11.1f} "
                  f"{(plan.weight_bytes - plan.gpu_weight_bytes) / gib:>12.1f} "
                  f"{(plan.peak + plan_mod.RESERVED_BYTES) / gib:>8.1f}")
    for fmt in ("as loaded", "fp8", "nf4"):
        for px in (512, 768, 1024):
            w = plan_mod.weight_bytes(facts, fmt)
            o = plan_mod.other_bytes(facts, fmt, tokens(px), 1, True, trainable)
            print(f"  {fmt:>9} {px:>5}: weights {w / gib:5.1f} + rest {o / gib:4.1f} = {(w + o) / gib:5.1f} GiB "
                  f"(+{plan_mod.RESERVED_BYTES / gib:.1f} reserved)")


if __name__ == "__main__":
    main()
