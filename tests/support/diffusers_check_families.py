"""Loads a diffusers-format FLUX.2 or Chroma LoRA into diffusers' own pipeline (Flux2KleinPipeline / Flux2Pipeline /
ChromaPipeline around a tiny transformer of the same layout) and checks the fused weight deltas against the expected
per-layer deltas (ComfyUI keys). Run as a script, without ComfyUI or the torchvision stub:

    python diffusers_check_families.py LORA EXPECTED FAMILY CONFIG_JSON
"""
import json
import sys

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file

from diffusers_deltas import assert_fused_deltas, load_and_fuse

lora_path, expected_path, family, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
H, heads = cfg["hidden_size"], cfg["num_heads"]
torch.manual_seed(0)
if family == "chroma":
    from diffusers import ChromaPipeline, ChromaTransformer2DModel
    transformer = ChromaTransformer2DModel(
        patch_size=1, in_channels=cfg["in_channels"], num_layers=cfg["depth"], num_single_layers=cfg["depth_single_blocks"],
        attention_head_dim=H // heads, num_attention_heads=heads, joint_attention_dim=cfg["context_in_dim"],
        axes_dims_rope=tuple(cfg["axes_dim"]), approximator_hidden_dim=cfg["hidden_dim"], approximator_layers=cfg["n_layers"])
    pipe = ChromaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                          transformer=transformer)
    double = {"img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out", "img_mlp.0": "ff.net.0.proj",
              "img_mlp.2": "ff.net.2", "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2"}
    mlp = int(H * cfg["mlp_ratio"])
    single = lambda s, t: [(f"{s}.linear1.weight", f"{t}.{part}.weight", start, size) for part, start, size in
                           (("attn.to_q", 0, H), ("attn.to_k", H, H), ("attn.to_v", 2 * H, H), ("proj_mlp", 3 * H, mlp))] \
        + [(f"{s}.linear2.weight", f"{t}.proj_out.weight", None, None)]
else:
    from diffusers import Flux2KleinPipeline, Flux2Pipeline, Flux2Transformer2DModel
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=cfg["in_channels"], num_layers=cfg["depth"], num_single_layers=cfg["depth_single_blocks"],
        attention_head_dim=H // heads, num_attention_heads=heads, joint_attention_dim=cfg["context_in_dim"],
        mlp_ratio=cfg["mlp_ratio"], axes_dims_rope=tuple(cfg["axes_dim"]), guidance_embeds=cfg["guidance_embed"])
    pipeline = Flux2Pipeline if cfg["guidance_embed"] else Flux2KleinPipeline
    pipe = pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                    transformer=transformer)
    double = {"img_attn.proj": "attn.to_out.0", "txt_attn.proj": "attn.to_add_out", "img_mlp.0": "ff.linear_in",
              "img_mlp.2": "ff.linear_out", "txt_mlp.0": "ff_context.linear_in", "txt_mlp.2": "ff_context.linear_out"}
    single = lambda s, t: [(f"{s}.linear1.weight", f"{t}.attn.to_qkv_mlp_proj.weight", None, None),
                           (f"{s}.linear2.weight", f"{t}.attn.to_out.weight", None, None)]

before, after = load_and_fuse(pipe, transformer, lora_path)
expected = load_file(expected_path)

pairs = []
for i in range(cfg["depth"]):
    d, t = f"diffusion_model.double_blocks.{i}", f"transformer_blocks.{i}"
    for j, part in enumerate("qkv"):
        pairs.append((f"{d}.img_attn.qkv.weight", f"{t}.attn.to_{part}.weight", j * H, H))
        pairs.append((f"{d}.txt_attn.qkv.weight", f"{t}.attn.add_{part}_proj.weight", j * H, H))
    pairs += [(f"{d}.{c}.weight", f"{t}.{n}.weight", None, None) for c, n in double.items()]
for i in range(cfg["depth_single_blocks"]):
    pairs += single(f"diffusion_model.single_blocks.{i}", f"single_transformer_blocks.{i}")

print("DIFFUSERS-OK", assert_fused_deltas(pairs, before, after, expected))
