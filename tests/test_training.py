"""Training behaviour: reproducibility, per-sample captions, optimizers/schedules, progress, fp8 models, DoRA, targets."""
import importlib
import math

import pytest
import torch

import training_data


def _mods(pack):
    get = lambda name: importlib.import_module(f"{pack.__name__}.trainer.{name}")
    return get("loop"), get("lora"), get("export")


def _train(comfy, pack, model=None, **kw):
    loop, lora_mod, _ = _mods(pack)
    base_model, examples = training_data.model_and_examples(comfy, pack)
    lora_kw = {k: kw.pop(k) for k in list(kw) if k in ("rank", "alpha", "dropout", "use_dora", "targets", "blocks")}
    settings = loop.TrainSettings(**{"steps": 3, "learning_rate": 1e-2, **kw}, lora=lora_mod.LoraSettings(**lora_kw))
    with torch.inference_mode():
        return loop.train_flux_lora(model or base_model, examples, settings)


def test_same_seed_gives_identical_file_bytes(comfy, pack):
    _, _, export = _mods(pack)
    runs = [_train(comfy, pack, seed=s, dropout=0.1, batch_size=2) for s in (11, 11, 12)]
    files = [export.lora_file_bytes(r, "kohya", "fp32") for r in runs]
    assert files[0] == files[1]
    assert files[0] != files[2]
    assert runs[0].losses == runs[1].losses


def test_each_sample_keeps_its_own_caption(comfy, pack):
    loop, lora_mod, _ = _mods(pack)
    predict = importlib.import_module(f"{pack.__name__}.trainer.predict")
    model, examples = training_data.model_and_examples(comfy, pack)
    assert examples[0].caption != examples[1].caption
    with torch.inference_mode(False), loop.training_patcher(model, examples, loop.TrainSettings()) as (patcher, lora, _):
        for p in lora.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, *examples[0].latent.shape, generator=g)
        s = torch.tensor([0.3, 0.8])
        ctx = torch.stack([examples[0].context, examples[1].context])
        pooled = torch.stack([examples[0].pooled, examples[1].pooled])
        with torch.no_grad():
            batched = predict.predict_velocity(patcher, x, s, ctx, pooled, 1.0)
            singles = [predict.predict_velocity(patcher, x[i:i + 1], s[i:i + 1], ctx[i:i + 1], pooled[i:i + 1], 1.0) for i in range(2)]
            swapped = predict.predict_velocity(patcher, x[:1], s[:1], ctx[1:2], pooled[1:2], 1.0)
    torch.testing.assert_close(batched, torch.cat(singles), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(singles[0], swapped, atol=1e-4)  # the caption matters


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_optimizers_train(comfy, pack, optimizer):
    lora = _train(comfy, pack, optimizer=optimizer, steps=3)
    assert len(lora.losses) == 3
    assert any(v.abs().max() > 0 for k, v in lora.items() if k.endswith("lora_up.weight"))


def test_adamw8bit_uses_bitsandbytes(comfy, pack):
    pytest.importorskip("bitsandbytes")
    try:
        lora = _train(comfy, pack, optimizer="adamw8bit", steps=2)
    except (RuntimeError, NotImplementedError, AssertionError) as e:  # bitsandbytes 8-bit kernels are CUDA-only on some builds
        pytest.skip(f"bitsandbytes 8-bit optimizer unavailable on this CPU: {e}")
    assert len(lora.losses) == 2


def test_warmup_and_cosine_schedule(comfy, pack):
    lora = _train(comfy, pack, scheduler="cosine", warmup_steps=2, steps=6, learning_rate=1e-3)
    lrs = lora.learning_rates
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3)
    assert lrs[2] > lrs[3] > lrs[4] > lrs[5] > 0


def test_progress_bar_and_gradient_accumulation(comfy, pack, monkeypatch):
    from comfy.utils import set_progress_bar_global_hook
    loop, _, _ = _mods(pack)
    seen, calls = [], []
    original = loop.batch_loss
    monkeypatch.setattr(loop, "batch_loss", lambda *a, **k: calls.append(1) or original(*a, **k))
    set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: seen.append((value, total)))
    try:
        _train(comfy, pack, steps=3, grad_accumulation=2)
    finally:
        set_progress_bar_global_hook(None)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert len(calls) == 6


def test_trains_on_fp8_weights(comfy, pack):
    import nodes
    model = nodes.UNETLoader().load_unet(comfy["names"]["unet"], "fp8_e4m3fn")[0]
    assert next(model.model.diffusion_model.parameters()).dtype == torch.float8_e4m3fn
    lora = _train(comfy, pack, model=model, steps=3)
    assert all(torch.isfinite(torch.tensor(lora.losses)))
    assert lora.info["model_weight_dtype"] == "float8_e4m3fn"
    assert any(v.abs().max() > 0 for k, v in lora.items() if k.endswith("lora_up.weight"))
    with pytest.raises(ValueError, match="DoRA needs unquantized"):
        _train(comfy, pack, model=model, use_dora=True)


def test_dora_export_reproduces_peft_weights(comfy, pack):
    """ComfyUI applying the saved dora_scale gives peft's DoRA weight m * (W + s*BA) / ||W + s*BA||."""
    from comfy.lora import calculate_weight, load_lora, model_lora_keys_unet
    loop, lora_mod, export = _mods(pack)
    model, examples = training_data.model_and_examples(comfy, pack)
    settings = loop.TrainSettings(lora=lora_mod.LoraSettings(rank=4, alpha=4.0, use_dora=True))
    with torch.inference_mode(False), loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        g = torch.Generator().manual_seed(5)
        for p in lora.parameters():
            with torch.no_grad():
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g)).add_(0.05 * torch.randn(p.shape, generator=g))
        weights = lora.comfy_state_dict()
        expected = {}
        for name in lora.names:
            layer = lora.layers[name]
            w = layer.base_layer.weight.detach().float()
            merged = w + (layer.lora_B["default"].weight @ layer.lora_A["default"].weight).detach()
            m = layer.lora_magnitude_vector["default"].weight.detach()
            expected[f"diffusion_model.{name}.weight"] = (w, m[:, None] * merged / merged.norm(dim=1, keepdim=True))
    kohya = export.kohya_state_dict(weights)
    patches = load_lora(kohya, model_lora_keys_unet(model.model, {}))
    assert set(patches) == set(expected)
    for key, (w, want) in expected.items():
        got = calculate_weight([(1.0, patches[key], 1.0, None, None)], w.clone(), key)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=key)


def test_target_presets_and_block_selection(pack):
    _, lora_mod, _ = _mods(pack)
    names = lora_mod.target_module_names("attention", "double 1, single 0-1", 2, 2)
    assert names == ["double_blocks.1.img_attn.qkv", "double_blocks.1.img_attn.proj", "double_blocks.1.txt_attn.qkv",
                     "double_blocks.1.txt_attn.proj", "single_blocks.0.linear1", "single_blocks.0.linear2",
                     "single_blocks.1.linear1", "single_blocks.1.linear2"]
    assert len(lora_mod.target_module_names("all linear", "all", 19, 38)) == 304  # kohya's count on FLUX.1-dev
    for bad in ("double 5", "triple 1", "single 3-1"):
        with pytest.raises(ValueError):
            lora_mod.target_module_names("all linear", bad, 2, 2)


def test_block_selection_trains_only_selected_layers(comfy, pack):
    lora = _train(comfy, pack, targets="attention", blocks="single 1")
    modules = sorted({k.split(".lora_")[0].rsplit(".alpha", 1)[0] for k in lora})
    assert modules == ["diffusion_model.single_blocks.1.linear1", "diffusion_model.single_blocks.1.linear2"]


def test_node_releases_text_encoder_and_vae(comfy, pack):
    """FluxLoRATrain encodes once, then moves CLIP and VAE out of ComfyUI's loaded models before training."""
    import comfy.model_management as mm
    node = importlib.import_module(f"{pack.__name__}.nodes.train").FluxLoRATrain
    model, clip, vae = training_data.load_models(comfy)
    images = training_data.image_batch(comfy)
    seen_loaded = []
    loop = importlib.import_module(f"{pack.__name__}.trainer.loop")
    original = loop.train_flux_lora

    def spy(*args, **kwargs):
        seen_loaded.extend(m.model for m in mm.current_loaded_models)
        return original(*args, **kwargs)
    train_module = importlib.import_module(f"{pack.__name__}.nodes.train")
    train_module.train_flux_lora, saved = spy, train_module.train_flux_lora
    try:
        with torch.inference_mode():
            out = node.execute(model=model, clip=clip, vae=vae, images=images, captions="tok_test a thing", steps=2,
                               learning_rate=1e-3, rank=4, alpha=4.0, optimizer="adamw", scheduler="constant",
                               warmup_steps=0, batch_size=1, grad_accumulation=1, max_grad_norm=1.0,
                               sigma_sampling="sigmoid", sigma_shift=3.1582, loss_weighting="none", caption_dropout=0.0,
                               guidance=1.0, seed=0, gradient_checkpointing=True, targets="all linear", blocks="all",
                               dropout=0.0, dora=False)
    finally:
        train_module.train_flux_lora = saved
    assert not any(m is clip.patcher or m is vae.patcher for m in seen_loaded)
    lora, model_with_lora, loss, curve, samples = out.result
    assert samples.shape == (1, 64, 64, 3)  # no Test Sampler connected: blank
    assert loss == {"loss": lora.losses} and len(lora.losses) == 2
    assert curve.ndim == 4 and curve.shape[-1] == 3
    assert len(model_with_lora.patches) == 26 and not model.patches


def test_sigma_sampling_shifts(pack):
    objective = importlib.import_module(f"{pack.__name__}.trainer.objective")
    draw = lambda method, **kw: objective.sample_sigmas(method, 4096, torch.Generator().manual_seed(0), **kw)
    base = draw("sigmoid")
    s = 3.1582
    torch.testing.assert_close(draw("shift", shift=s), s * base / (1 + (s - 1) * base))
    # flux_shift at 1024x1024 (4096 packed tokens) is FLUX's own shift exp(1.15) ~ 3.158; smaller images shift less
    torch.testing.assert_close(draw("flux_shift", image_tokens=4096), draw("shift", shift=math.exp(1.15)))
    assert draw("flux_shift", image_tokens=1024).mean() < draw("flux_shift", image_tokens=4096).mean()
    assert base.mean() < draw("shift", shift=s).mean()
    assert 0 < draw("uniform").min() and draw("uniform").max() < 1
    assert draw("logit_normal").mean() == pytest.approx(0.5, abs=0.02)
