"""Saved LoRA files: both formats load in stock ComfyUI LoraLoader with zero unloaded keys and reproduce the
trained weight deltas; the diffusers file loads in diffusers' FluxPipeline; metadata; safe file names."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import training_data

SUPPORT = Path(__file__).resolve().parents[1] / "support"


@pytest.fixture(scope="module")
def trained(comfy, core):
    model, examples = training_data.model_and_examples(comfy)
    with torch.inference_mode():
        return core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(
            steps=5, learning_rate=2e-2, rank=4, alpha=2.0, caption_dropout=0.0), preset="balanced")


def _save(core, comfy, lora, fmt, precision="fp32", prefix="formats/test", trigger=""):
    name, _ = core.export.save_to_loras(lora, prefix, fmt, precision, trigger)
    return comfy["loras"] / name


def _expected_deltas(lora):
    out = {}
    for key, up in lora.items():
        if key.endswith(".lora_up.weight"):
            module = key[:-len(".lora_up.weight")]
            down = lora[f"{module}.lora_down.weight"]
            out[f"{module}.weight"] = float(lora[f"{module}.alpha"]) / down.shape[0] * (up @ down)
    return out


@pytest.mark.parametrize("fmt", ["kohya", "diffusers"])
def test_loraloader_applies_exact_deltas(comfy, core, trained, fmt, caplog):
    from comfy.lora import calculate_weight
    import folder_paths
    import nodes
    model, _ = training_data.model_and_examples(comfy)
    path = _save(core, comfy, trained, fmt, prefix=f"formats/{fmt}")
    name = path.relative_to(comfy["loras"]).as_posix()
    assert name in folder_paths.get_filename_list("loras")  # listed at once, no restart
    with caplog.at_level(logging.WARNING):
        patched = nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)[0]
    assert not [r.getMessage() for r in caplog.records if "lora key not loaded" in r.getMessage() or "NOT LOADED" in r.getMessage()]
    expected = _expected_deltas(trained)
    assert set(patched.patches) == set(expected)
    base = model.model.diffusion_model.state_dict()
    for key, delta in expected.items():
        w = base[key[len("diffusion_model."):]].float()
        got = calculate_weight(patched.patches[key], w.clone(), key)
        torch.testing.assert_close(got - w, delta, rtol=1e-5, atol=1e-6, msg=key)


def test_metadata_and_names(comfy, core, trained):
    path = _save(core, comfy, trained, "kohya", precision="bf16", prefix="meta/my_lora", trigger="tok_test")
    assert path.name == "my_lora_000005steps_00001.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
        assert f.get_tensor("lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight").dtype == torch.bfloat16
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in keys
    assert "lora_unet_single_blocks_1_linear1.alpha" in keys
    assert meta["modelspec.architecture"] == "flux-1-dev/lora"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["ss_steps"] == "5" and meta["ss_optimizer"] == "adamw"
    assert meta["ss_trigger_word"] == "tok_test" and meta["ss_timestep_sampling"] == "sigmoid"
    assert meta["ss_guidance_scale"] == "1.0" and meta["ss_resolution"] == "(64, 64)"
    assert json.loads(meta["ss_network_args"])["targets"] == "all linear"
    # the complete settings and the preset they started from; only what the run used (no shift for 'sigmoid')
    assert json.loads(meta["fluxlora_settings"]) == trained.info.settings.as_dict() and meta["fluxlora_preset"] == "balanced"
    assert "ss_discrete_flow_shift" not in meta and "ss_caption_dropout_rate" not in meta
    # a second save never overwrites the first
    again = _save(core, comfy, trained, "kohya", precision="bf16", prefix="meta/my_lora")
    assert again.name == "my_lora_000005steps_00002.safetensors" and path.exists()


def test_diffusers_file_loads_in_diffusers_pipeline(comfy, core, trained, tmp_path):
    """Runs in a separate process without the torchvision test stub (diffusers must see the real environment)."""
    from safetensors.torch import save_file
    path = _save(core, comfy, trained, "diffusers", prefix="formats/diffusers_interop")
    save_file({k: v.contiguous() for k, v in _expected_deltas(trained).items()}, str(tmp_path / "expected.safetensors"))
    cfg = trained.info.model.unet_config
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, str(SUPPORT / "diffusers_check.py"), str(path), str(tmp_path / "expected.safetensors"),
                           json.dumps(cfg)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "DIFFUSERS-OK" in proc.stdout


def test_diffusers_file_names_each_diffusers_module_once(comfy, core, trained):
    """Exactly the modules of diffusers' FluxTransformer2DModel, no aliases: ComfyUI v0.33's map also lists Flux 2 /
    LyCORIS names for the same FLUX.1 weights (attn.to_qkv_mlp_proj, attn.to_out, ff.linear_in), which would apply
    those layers twice."""
    path = _save(core, comfy, trained, "diffusers", prefix="formats/diffusers_names")
    with safe_open(str(path), "pt") as f:
        modules = {k.rsplit(".lora_", 1)[0] for k in f.keys()}
        assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in f.keys())
    double = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
              "attn.to_out.0", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
              "ff_context.net.2", "norm1.linear", "norm1_context.linear"]
    single = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out", "norm.linear"]
    expected = {f"transformer.transformer_blocks.{i}.{m}" for i in range(2) for m in double}
    expected |= {f"transformer.single_transformer_blocks.{i}.{m}" for i in range(2) for m in single}
    assert modules == expected
