"""Loads a diffusers-format LoRA into FluxPipeline (tiny transformer, same weights layout) and checks the fused
weight deltas against the expected per-layer deltas. Run as a script, without ComfyUI or the torchvision stub."""
import json
import sys

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from safetensors.torch import load_file

from diffusers_deltas import assert_fused_deltas, load_and_fuse

lora_path, expected_path, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
H, heads = cfg["hidden_size"], cfg["num_heads"]
torch.manual_seed(0)
transformer = FluxTransformer2DModel(
    patch_size=1, in_channels=cfg["in_channels"] * 4, num_layers=cfg["depth"], num_single_layers=cfg["depth_single_blocks"],
    attention_head_dim=H // heads, num_attention_heads=heads, joint_attention_dim=cfg["context_in_dim"],
    pooled_projection_dim=cfg["vec_in_dim"], guidance_embeds=True, axes_dims_rope=tuple(cfg["axes_dim"]))
pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None, tokenizer=None,
                    text_encoder_2=None, tokenizer_2=None, transformer=transformer)
before, after = load_and_fuse(pipe, transformer, lora_path)
expected = load_file(expected_path)

# ComfyUI layer -> diffusers weights (rows of fused layers), the mapping ComfyUI itself uses
pairs = []
for i in range(cfg["depth"]):
    d, t = f"diffusion_model.double_blocks.{i}", f"transformer_blocks.{i}"
    for part, rows in (("to_q", 0), ("to_k", 1), ("to_v", 2)):
        pairs.append((f"{d}.img_attn.qkv.weight", f"{t}.attn.{part}.weight", rows * H, H))
        pairs.append((f"{d}.txt_attn.qkv.weight", f"{t}.attn.add_{part[-1]}_proj.weight", rows * H, H))
    for comfy_name, diffusers_name in (("img_attn.proj", "attn.to_out.0"), ("txt_attn.proj", "attn.to_add_out"),
                                       ("img_mlp.0", "ff.net.0.proj"), ("img_mlp.2", "ff.net.2"),
                                       ("txt_mlp.0", "ff_context.net.0.proj"), ("txt_mlp.2", "ff_context.net.2"),
                                       ("img_mod.lin", "norm1.linear"), ("txt_mod.lin", "norm1_context.linear")):
        pairs.append((f"{d}.{comfy_name}.weight", f"{t}.{diffusers_name}.weight", None, None))
for i in range(cfg["depth_single_blocks"]):
    s, t = f"diffusion_model.single_blocks.{i}", f"single_transformer_blocks.{i}"
    for part, start, size in (("attn.to_q", 0, H), ("attn.to_k", H, H), ("attn.to_v", 2 * H, H), ("proj_mlp", 3 * H, 4 * H)):
        pairs.append((f"{s}.linear1.weight", f"{t}.{part}.weight", start, size))
    pairs.append((f"{s}.linear2.weight", f"{t}.proj_out.weight", None, None))
    pairs.append((f"{s}.modulation.lin.weight", f"{t}.norm.linear.weight", None, None))

print("DIFFUSERS-OK", assert_fused_deltas(pairs, before, after, expected))
