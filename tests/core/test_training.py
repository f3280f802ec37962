"""Training behaviour: reproducibility, per-sample captions, optimizers/schedules, progress, fp8 models, DoRA,
targets, aspect buckets, and the run entry point (encoders released, outputs)."""
import pytest
import torch

import photo_folder
import training_data


def _train(comfy, core, model=None, **kw):
    base_model, examples = training_data.model_and_examples(comfy)
    settings = core.settings.TrainSettings(**{"steps": 3, "learning_rate": 1e-2, "caption_dropout": 0.0, **kw})
    with torch.inference_mode():
        return core.loop.train_flux_lora(model or base_model, examples, settings)


def test_same_seed_gives_identical_file_bytes(comfy, core):
    runs = [_train(comfy, core, seed=s, lora_dropout=0.1, batch_size=2) for s in (11, 11, 12)]
    files = [core.export.lora_file_bytes(r, "kohya", "fp32") for r in runs]
    assert files[0] == files[1]
    assert files[0] != files[2]
    assert runs[0].losses == runs[1].losses


def test_each_sample_keeps_its_own_caption(comfy, core):
    model, examples = training_data.model_and_examples(comfy)
    predict = core.predict.predict_velocity
    with torch.inference_mode(False), core.loop.training_patcher(model, examples, core.settings.TrainSettings()) as (patcher, lora, _):
        for p in lora.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, *examples[0].latent.shape, generator=g)
        s = torch.tensor([0.3, 0.8])
        ctx = torch.stack([examples[0].context, examples[1].context])
        pooled = torch.stack([examples[0].pooled, examples[1].pooled])
        with torch.no_grad():
            batched = predict(patcher, x, s, ctx, pooled, 1.0)
            singles = [predict(patcher, x[i:i + 1], s[i:i + 1], ctx[i:i + 1], pooled[i:i + 1], 1.0) for i in range(2)]
            swapped = predict(patcher, x[:1], s[:1], ctx[1:2], pooled[1:2], 1.0)
    torch.testing.assert_close(batched, torch.cat(singles), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(singles[0], swapped, atol=1e-4)  # the caption matters


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor", "adamw8bit"])
def test_optimizers_train(comfy, core, optimizer):
    lora = _train(comfy, core, optimizer=optimizer, steps=3)
    assert len(lora.losses) == 3
    assert any(v.abs().max() > 0 for k, v in lora.items() if k.endswith("lora_up.weight"))


def test_warmup_and_cosine_schedule(comfy, core):
    lora = _train(comfy, core, scheduler="cosine", warmup_steps=2, steps=6, learning_rate=1e-3)
    lrs = lora.learning_rates
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3)
    assert lrs[2] > lrs[3] > lrs[4] > lrs[5] > 0


def test_progress_bar_and_gradient_accumulation(comfy, core, monkeypatch):
    from comfy.utils import set_progress_bar_global_hook
    seen, calls = [], []
    original = core.loop._batch
    monkeypatch.setattr(core.loop, "_batch", lambda *a, **k: calls.append(1) or original(*a, **k))
    set_progress_bar_global_hook(lambda value, total, preview=None, node_id=None: seen.append((value, total)))
    try:
        _train(comfy, core, steps=3, grad_accumulation=2)
    finally:
        set_progress_bar_global_hook(None)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert len(calls) == 6


def test_trains_on_fp8_weights(comfy, core):
    import nodes
    model = nodes.UNETLoader().load_unet(comfy["names"]["unet"], "fp8_e4m3fn")[0]
    assert next(model.model.diffusion_model.parameters()).dtype == torch.float8_e4m3fn
    lora = _train(comfy, core, model=model, steps=3)
    assert all(torch.isfinite(torch.tensor(lora.losses)))
    assert lora.info.model.weight_dtype == "float8_e4m3fn"
    assert any(v.abs().max() > 0 for k, v in lora.items() if k.endswith("lora_up.weight"))
    with pytest.raises(ValueError, match="DoRA needs unquantized"):
        _train(comfy, core, model=model, use_dora=True)


def test_dora_export_reproduces_peft_weights(comfy, core):
    """ComfyUI applying the saved dora_scale gives peft's DoRA weight m * (W + s*BA) / ||W + s*BA||."""
    from comfy.lora import calculate_weight, load_lora, model_lora_keys_unet
    model, examples = training_data.model_and_examples(comfy)
    settings = core.settings.TrainSettings(rank=4, use_dora=True)
    with torch.inference_mode(False), core.loop.training_patcher(model, examples, settings) as (patcher, lora, _):
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
    kohya = core.export.kohya_state_dict(weights)
    patches = load_lora(kohya, model_lora_keys_unet(model.model, {}))
    assert set(patches) == set(expected)
    for key, (w, want) in expected.items():
        got = calculate_weight([(1.0, patches[key], 1.0, None, None)], w.clone(), key)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=key)


def test_block_selection_trains_only_selected_layers(comfy, core):
    lora = _train(comfy, core, targets="attention", blocks="single 1")
    modules = sorted({k.split(".lora_")[0].rsplit(".alpha", 1)[0] for k in lora})
    assert modules == ["diffusion_model.single_blocks.1.linear1", "diffusion_model.single_blocks.1.linear2"]


def test_training_on_aspect_buckets_keeps_batches_in_one_bucket(comfy, core, monkeypatch):
    folder = photo_folder.write_photo_folder(comfy["root"] / "input" / "photos_buckets")
    model, clip, vae = training_data.load_models(comfy)
    ds = core.folder.load_folder(str(folder), [], resolution=256, crop="aspect buckets")
    with torch.inference_mode():
        examples = core.examples.Encoder(model, clip, vae).examples(core.examples.sources_from_dataset(ds))
    assert len(examples) == len(ds.images) and len({tuple(e.latent.shape) for e in examples}) >= 3
    shapes, tokens = [], []
    real_sample = core.objective.sample_sigmas

    def spy(method, batch, generator, **kw):
        tokens.append(kw["image_tokens"])
        return real_sample(method, batch, generator, **kw)
    monkeypatch.setattr(core.objective, "sample_sigmas", spy)
    real_collate = core.loop.collate
    monkeypatch.setattr(core.loop, "collate", lambda batch, *a: shapes.append({tuple(e.latent.shape) for e in batch}) or real_collate(batch, *a))
    with torch.inference_mode():
        core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(steps=6, batch_size=2, caption_dropout=0.0,
                                                                               sigma_sampling="flux_shift"))
    assert all(len(s) == 1 for s in shapes)  # a batch never mixes buckets
    for s, t in zip(shapes, tokens):  # flux_shift uses that bucket's own token count
        (c, h, w), = s
        assert t == (h // 2) * (w // 2)


def test_run_encodes_once_then_releases_text_encoder_and_vae(comfy, core, monkeypatch):
    """train_run checks the MODEL, encodes once, moves CLIP and VAE out of ComfyUI's loaded models before training,
    and hands back the LoRA, the patched MODEL, the loss curve and (without sample settings) no sample grid."""
    import comfy.model_management as mm
    model, clip, vae = training_data.load_models(comfy)
    dataset = training_data.dataset(comfy)
    seen_loaded = []
    original = core.run.train_flux_lora

    def spy(*args, **kwargs):
        seen_loaded.extend(m.model for m in mm.current_loaded_models)
        return original(*args, **kwargs)
    monkeypatch.setattr(core.run, "train_flux_lora", spy)
    settings = core.settings.TrainSettings.from_preset("fast test", steps=2, rank=4)
    with torch.inference_mode():
        out = core.run.train_run(model, clip, vae, dataset, settings, preset="fast test")
    assert not any(m is clip.patcher or m is vae.patcher for m in seen_loaded)
    assert out.sample_grid is None and out.checkpoints == []
    assert len(out.lora.losses) == 2 and out.lora.info.preset == "fast test" and out.images_encoded == 4
    assert out.loss_curve.ndim == 4 and out.loss_curve.shape[-1] == 3
    assert len(out.model.patches) == 26 and not model.patches


def test_wrong_model_is_refused_before_any_encoding(comfy, core, monkeypatch):
    import nodes
    _, clip, vae = training_data.load_models(comfy)
    sdxl_like = nodes.VAELoader  # anything that is not a FLUX MODEL
    monkeypatch.setattr(core.examples.Encoder, "examples", lambda *a, **k: pytest.fail("encoded before the check"))
    with pytest.raises(core.flux_model.NotAFluxModel, match="FLUX.1, FLUX.2 and Chroma LoRAs only"):
        core.run.train_run(sdxl_like, clip, vae, training_data.dataset(comfy), core.settings.TrainSettings())
