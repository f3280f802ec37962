"""FLUX.2 ([klein] and [dev]) and Chroma train on the same trainer core, through tiny models of ComfyUI's own classes
loaded with the stock loaders: the family is recognised, one step's LoRA gradients equal an independent reference
forward of that family (also on the stand-in for newer ComfyUI's Flux code, see flux_code), a run leaves the shared
MODEL unchanged and renders checkpoint samples, and the saved LoRA loads in stock LoraLoader with zero unloaded keys;
at full size every trained layer has a key ComfyUI maps."""
import logging

import pytest
import torch

import reference_families
import training_data
from gradient_check import assert_gradients_match, randomize, trainer_gradients
from model_snapshot import assert_clean, snapshot

EXPECTED = {"chroma": ("chroma", "chroma", "chroma/lora"), "klein": ("flux2", "klein", "flux-2-klein/lora"),
            "flux2_dev": ("flux2", "dev", "flux-2-dev/lora")}


def _need(comfy, family):
    if not training_data.family_available(comfy, family):
        pytest.skip(f"this ComfyUI has no {family} text encoder (FLUX.2 [klein]'s Qwen3 arrived after v0.8.0)")


@pytest.mark.parametrize("family", training_data.FAMILIES)
def test_family_is_recognised_and_targets_its_block_layers(comfy, core, family):
    _need(comfy, family)
    model, clip, vae = training_data.load_family(comfy, family)
    info = core.flux_model.flux_info(model)
    assert (info.family, info.variant) == EXPECTED[family][:2]
    core.flux_model.check_clip(clip, model)
    core.flux_model.check_vae(vae, model)
    if info.family == "flux2":   # the width check reads the LLM's embedding: 3 stacked layers x its width
        llm = core.flux_model._text_encoder_module(clip.cond_stage_model)
        assert llm.transformer.model.embed_tokens.weight.shape[1] * 3 == model.model.diffusion_model.params.context_in_dim
    names = core.targets.model_target_names("all linear", "all", model.model.diffusion_model)
    assert len(names) == 2 * 8 + 2 * 2   # 8 Linears per double block, linear1/linear2 per single block: no modulation
    assert not any("mod" in n for n in names)


def test_clip_and_vae_of_another_family_are_refused(comfy, core):
    chroma, t5, flux_vae = training_data.load_family(comfy, "chroma")
    _, flux_clip, _ = training_data.load_models(comfy)
    with pytest.raises(ValueError, match="Chroma needs T5-XXL alone.*type 'chroma'"):
        core.flux_model.check_clip(flux_clip, chroma)
    flux2, flux2_clip, flux2_vae = training_data.load_family(comfy, "flux2_dev")
    with pytest.raises(ValueError, match="this FLUX.2 MODEL needs Mistral-3.*type 'flux2'"):
        core.flux_model.check_clip(t5, flux2)
    with pytest.raises(ValueError, match="VAE makes 16-channel latents; this FLUX.2 model needs 128-channel"):
        core.flux_model.check_vae(flux_vae, flux2)
    with pytest.raises(ValueError, match="VAE makes 128-channel latents; this Chroma model needs 16-channel"):
        core.flux_model.check_vae(flux2_vae, chroma)


def _same_text_length(examples):
    """Two examples that batch together (Chroma's T5 text is unpadded: batches share a text length)."""
    lengths = [e.context.shape[0] for e in examples]
    return next([i, j] for i in range(len(lengths)) for j in range(i + 1, len(lengths)) if lengths[i] == lengths[j])


@pytest.mark.parametrize("family", training_data.FAMILIES)
@pytest.mark.parametrize("checkpointing", [True, False])
def test_lora_gradients_match_the_family_reference(comfy, core, family, checkpointing, flux_code):
    _need(comfy, family)
    loop, objective = core.loop, core.objective
    model, examples = training_data.family_examples(comfy, family)
    assert examples[0].pooled.numel() == 0 and examples[0].latent.shape[0] == (16 if family == "chroma" else 128)
    settings = core.settings.TrainSettings(gradient_checkpointing=checkpointing, batch_size=2, train_guidance=1.0,
                                           rank=4, alpha=8.0, caption_dropout=0.0)
    with torch.inference_mode(False):
        with loop.training_patcher(model, examples, settings) as (patcher, lora, _):
            randomize(lora)
            pair = _same_text_length(examples)
            loss = loop.batch_loss(patcher, examples, pair, settings, torch.Generator().manual_seed(7), "cpu")
            loss.backward()
            ours, leaves = trainer_gradients(lora, settings.effective_alpha / settings.rank)
            dm = patcher.model.diffusion_model
            gen = torch.Generator().manual_seed(7)
            x0 = torch.stack([examples[i].latent for i in pair])
            noise = torch.randn(x0.shape, generator=gen)
            sigmas = objective.sample_sigmas("sigmoid", 2, gen)
            xt = objective.noisy_latents(x0, noise, sigmas)
            context = torch.stack([examples[i].context for i in pair])
            if family == "chroma":
                pred = reference_families.ChromaReference(dm, leaves)(xt, sigmas, context)
            else:
                pred = reference_families.Flux2Reference(dm, leaves)(xt, sigmas, context, torch.full((2,), 1.0))
            ref_loss = ((pred - (noise - x0)) ** 2).reshape(2, -1).mean(1).mean()
            ref_loss.backward()
    assert abs(loss.item() - ref_loss.item()) <= 1e-4 * abs(ref_loss.item())
    assert len(ours) == 20
    assert_gradients_match(ours, leaves)


@pytest.mark.parametrize("family", training_data.FAMILIES)
def test_family_trains_leaves_the_model_unchanged_and_saves_a_loadable_lora(comfy, core, family, tmp_path, caplog):
    _need(comfy, family)
    import nodes
    from safetensors import safe_open
    model, clip, vae = training_data.load_family(comfy, family)
    before = snapshot(model)
    samples = core.sampling.SampleSettings(("{trigger} a red thing",), width=64, height=64, steps=2, guidance=4.0,
                                           every_n_steps=2)
    with torch.inference_mode():
        out = core.run.train_run(model, clip, vae, training_data.dataset(comfy), core.settings.TrainSettings(
            steps=4, learning_rate=1e-2, rank=4, caption_dropout=0.2), sample_settings=samples,
            cache_root=str(tmp_path / "cache"))
    core.loop.mm.unload_all_models()
    assert_clean(before, snapshot(model))
    assert len(out.lora.losses) == 4 and all(torch.isfinite(torch.tensor(out.lora.losses)))
    assert out.checkpoints == [2, 4] and out.sample_grid is not None and out.sample_grid.std() > 0
    assert out.images_encoded == len(training_data.dataset(comfy).images)
    import comfy.utils as comfy_utils   # (a module alias: 'comfy' is the fixture here)
    unet_config = out.lora.info.model.unet_config
    # ComfyUI reads diffusers-named FLUX.2 LoRAs where its diffusers map knows FLUX.2's names (v0.33, not v0.8.0)
    comfy_reads_diffusers = family == "chroma" or "single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight" in \
        comfy_utils.flux_to_diffusers(unet_config, output_prefix="diffusion_model.")
    for fmt in ("kohya", "diffusers"):
        name = f"families/{family}_{fmt}.safetensors"
        path = comfy["loras"] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        core.files.write_replacing(str(path), core.export.lora_file_bytes(out.lora, fmt, "fp32"))
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        assert meta["modelspec.architecture"] == EXPECTED[family][2] and meta["ss_base_model_version"] == EXPECTED[family][0]
        if fmt == "diffusers":
            _check_in_diffusers(path, out.lora, family, unet_config, tmp_path)
            if not comfy_reads_diffusers:
                continue
        with caplog.at_level(logging.WARNING):
            patched = nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)[0]
        assert not [r.getMessage() for r in caplog.records if "lora key not loaded" in r.getMessage()]
        assert len(patched.patches) == 20
        caplog.clear()


def _check_in_diffusers(path, lora, family, unet_config, tmp_path):
    """diffusers' own pipeline for the family loads the file and fuses exactly the trained deltas (a separate process
    without the torchvision test stub: diffusers must see the real environment)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path
    from safetensors.torch import save_file
    deltas = {}
    for key, up in lora.items():
        if key.endswith(".lora_up.weight"):
            module = key[:-len(".lora_up.weight")]
            down = lora[f"{module}.lora_down.weight"]
            deltas[f"{module}.weight"] = (float(lora[f"{module}.alpha"]) / down.shape[0] * (up @ down)).contiguous()
    save_file(deltas, str(tmp_path / "expected.safetensors"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    script = Path(__file__).resolve().parents[1] / "support" / "diffusers_check_families.py"
    proc = subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "expected.safetensors"), family,
                           json.dumps(unet_config)], capture_output=True, text=True, env=env, timeout=300)
    modules = 34 if family == "chroma" else 28   # diffusers modules: Chroma splits qkv and linear1, FLUX.2 only qkv
    assert proc.returncode == 0 and f"DIFFUSERS-OK {modules}" in proc.stdout, proc.stdout + proc.stderr[-3000:]


def test_control_images_are_refused_for_chroma(comfy, core):
    model, clip, vae = training_data.load_family(comfy, "chroma")
    with pytest.raises(ValueError, match="Reference images .edit LoRAs. are for FLUX.1 Kontext and FLUX.2; ComfyUI's "
                                         "Chroma has no reference input"):
        core.run.train_run(model, clip, vae, training_data.paired_dataset(comfy), core.settings.TrainSettings(steps=1))


def test_guidance_setting_is_refused_where_the_model_has_no_guidance_input(comfy, core):
    model, clip, vae = training_data.load_family(comfy, "chroma")
    with pytest.raises(ValueError, match="train_guidance is 3.5, but Chroma has no distilled-guidance input"):
        core.run.train_run(model, clip, vae, training_data.dataset(comfy),
                           core.settings.TrainSettings(steps=1, train_guidance=3.5))


FULL_SIZE = {  # the configs ComfyUI detects for the real checkpoints (blocks, hidden, heads, text width)
    "FLUX.2 klein 4B": ("flux", dict(hidden_size=3072, num_heads=24, depth=5, depth_single_blocks=20,
                                     context_in_dim=7680, guidance_embed=False)),
    "FLUX.2 dev": ("flux", dict(hidden_size=6144, num_heads=48, depth=8, depth_single_blocks=48,
                                context_in_dim=15360, guidance_embed=True)),
    "Chroma": ("chroma", {}),
}
FLUX2 = dict(vec_in_dim=None, mlp_ratio=3.0, qkv_bias=False, theta=2000, patch_size=1, txt_ids_dims=[3],
             global_modulation=True, mlp_silu_act=True, ops_bias=False, axes_dim=[32, 32, 32, 32], in_channels=128,
             out_channels=128)
CHROMA = dict(in_channels=64, out_channels=64, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24,
              depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True,
              in_dim=64, out_dim=3072, hidden_dim=5120, n_layers=5, txt_ids_dims=[], vec_in_dim=None)


def _full_size_model(kind, cfg):
    """ComfyUI's model for the real checkpoint's keys (built on the meta device: nothing allocated), as the stock
    loader detects and builds it."""
    import comfy.ldm.chroma.model
    import comfy.ldm.flux.model
    import comfy.model_detection
    import comfy.ops
    cls, cfg = ((comfy.ldm.chroma.model.Chroma, CHROMA) if kind == "chroma" else (comfy.ldm.flux.model.Flux, {**FLUX2, **cfg}))
    with torch.device("meta"):
        sd = cls(operations=comfy.ops.disable_weight_init, dtype=torch.bfloat16, device="meta", **cfg).state_dict()
    config = comfy.model_detection.model_config_from_unet(sd, "")
    if config is None or config.unet_config.get("hidden_size") != cfg["hidden_size"] \
            or config.unet_config.get("num_heads") != cfg["num_heads"]:
        pytest.skip("this ComfyUI does not detect this checkpoint's layout (v0.8.0 hard-codes FLUX.2's 48 heads)")
    with torch.device("meta"):
        return config.get_model(sd, "", device="meta")


@pytest.mark.parametrize("title", list(FULL_SIZE))
def test_full_size_lora_keys_are_all_mapped_by_comfyui(comfy, core, title):
    from comfy.lora import model_lora_keys_unet
    base = _full_size_model(*FULL_SIZE[title])
    info_family = core.flux_model.model_family(base, base.diffusion_model)
    assert info_family == ("chroma" if title == "Chroma" else "flux2")
    names = core.targets.model_target_names("all linear", "all", base.diffusion_model)
    blocks = len(base.diffusion_model.double_blocks), len(base.diffusion_model.single_blocks)
    assert len(names) == 8 * blocks[0] + 2 * blocks[1]
    key_map = model_lora_keys_unet(base, {})
    weights = {}
    for n in names:
        layer = base.diffusion_model.get_submodule(n)
        weights[f"diffusion_model.{n}.lora_up.weight"] = torch.zeros(layer.out_features, 1)
        weights[f"diffusion_model.{n}.lora_down.weight"] = torch.zeros(1, layer.in_features)
        weights[f"diffusion_model.{n}.alpha"] = torch.tensor(1.0)
    kohya = core.export.kohya_state_dict(weights)
    modules = {k.rsplit(".lora_", 1)[0] for k in kohya if ".lora_" in k}
    unmapped = sorted(m for m in modules if m not in key_map)
    assert not unmapped and len(modules) == len(names)
    diffusers = core.export.diffusers_state_dict(weights, dict(base.model_config.unet_config))
    diffusers_modules = {k.rsplit(".lora_", 1)[0] for k in diffusers}
    assert len(diffusers_modules) == (len(names) + 4 * blocks[0] + (3 * blocks[1] if title == "Chroma" else 0))
    if title == "Chroma" or "transformer.single_transformer_blocks.0.attn.to_qkv_mlp_proj" in key_map:
        assert diffusers_modules <= set(key_map)   # ComfyUI reads them too (FLUX.2's names: v0.33, not v0.8.0)


@pytest.mark.parametrize("family", ["chroma", "flux2_dev"])
def test_family_trains_on_an_nf4_copy(comfy, core, family, tmp_path):
    """The low-VRAM tier's NF4 copy is built from these models too (FLUX.2's shared modulation quantized, Chroma's
    approximator kept in the compute dtype); the first loss is close to the unquantized run's and the shared MODEL is
    left as it was."""
    model, clip, vae = training_data.load_family(comfy, family)
    before = snapshot(model)
    losses = {}
    for fmt in ("as loaded", "nf4"):
        with torch.inference_mode():
            out = core.run.train_run(model, clip, vae, training_data.dataset(comfy), core.settings.TrainSettings(
                steps=2, rank=4, caption_dropout=0.0, base_weights=fmt), cache_root=str(tmp_path / "cache"))
        losses[fmt] = out.lora.losses
        assert out.plan.base_weights == fmt
    core.loop.mm.unload_all_models()
    assert_clean(before, snapshot(model))
    assert abs(losses["nf4"][0] - losses["as loaded"][0]) <= 0.05 * losses["as loaded"][0]


def test_chroma_nf4_copy_keeps_its_approximator_dense(comfy, core):
    import bitsandbytes as bnb
    model, _, _ = training_data.load_family(comfy, "chroma")
    with torch.inference_mode(False):
        copy = core.base_weights.training_copy(model, "nf4").model.diffusion_model
    approximator = [m for m in copy.distilled_guidance_layer.modules() if isinstance(m, torch.nn.Linear)]
    assert approximator and all(not isinstance(m, bnb.nn.Linear4bit) and m.weight.dtype == torch.float32
                                for m in approximator)
    blocks = [m for m in copy.double_blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert blocks and all(isinstance(m, bnb.nn.Linear4bit) for m in blocks)
