"""Training methods: LoRA-GA / PiSSA / OLoRA initialisation, LoKr, prior preservation (regularization images and
differential output), Prodigy. Each changes the run, saves a file stock ComfyUI loads with zero unloaded keys and with
the trained weights, and leaves the shared MODEL as it was."""
import hashlib
import logging
from pathlib import Path

import pytest
import torch

import training_data
from model_snapshot import assert_clean, snapshot


def _predict(core, patcher, examples, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, *examples[0].latent.shape, generator=g)
    s = torch.tensor([0.3, 0.7])
    ctx = torch.stack([examples[0].context, examples[1].context])
    pooled = torch.stack([examples[0].pooled, examples[1].pooled])
    with torch.no_grad():
        return core.predict.predict_velocity(patcher, x, s, ctx, pooled, 1.0)


def _loaded_file_prediction(comfy, core, lora, caplog):
    """The saved file through stock LoraLoaderModelOnly, sampled by ComfyUI's own blocks: (prediction, warnings)."""
    import comfy.model_management as mm
    import nodes
    model, examples = training_data.model_and_examples(comfy)
    name, _ = core.export.save_to_loras(lora, "methods/check", "kohya", "fp32")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        patched = nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, 1.0)[0]
    unloaded = [r.getMessage() for r in caplog.records if "lora key not loaded" in r.getMessage()]
    with torch.inference_mode():
        mm.load_models_gpu([patched])
        prediction = _predict(core, patched, examples)
    mm.unload_all_models()  # ComfyUI patched the shared weights in place for this clone: put them back
    return prediction, unloaded


@pytest.mark.parametrize("init", ["pissa", "olora", "lora_ga"])
def test_init_starts_from_the_unchanged_model_and_saves_a_plain_lora(comfy, core, init, caplog):
    model, examples = training_data.model_and_examples(comfy)
    before = snapshot(model)
    settings = core.settings.TrainSettings(rank=4, init=init, caption_dropout=0.0)
    with torch.inference_mode(False), core.loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        plain = _predict(core, patcher, examples)  # B = 0: the untouched model
        seconds = core.lora_init.initialize(lora, init, core.loop._gradient_batches(patcher, examples, settings, "cpu"))
        started = _predict(core, patcher, examples)
        assert any(l.lora_B["default"].weight.abs().max() > 0 for l in lora.layers.values())  # a real, non-zero init
    torch.testing.assert_close(started, plain, rtol=1e-4, atol=1e-4)  # ... that still starts from the same model
    assert seconds > 0
    with torch.inference_mode():
        lora_file = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(
            steps=4, learning_rate=1e-2, rank=4, init=init, caption_dropout=0.0))
    assert lora_file.info.init_seconds > 0
    assert lora_file["diffusion_model.single_blocks.0.linear1.lora_down.weight"].shape[0] == 8  # rank 2r
    assert_clean(before, snapshot(model))
    with torch.inference_mode(False), core.loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        lora.load_trainable_state(_trainable(core, lora_file, lora))
        trained = _predict(core, patcher, examples)
    loaded, unloaded = _loaded_file_prediction(comfy, core, lora_file, caplog)
    assert not unloaded
    torch.testing.assert_close(loaded, trained, rtol=1e-3, atol=1e-4)
    assert not torch.allclose(trained, plain, atol=1e-4)  # training changed it


def _trainable(core, lora_file, lora):
    """The trained adapter state from a saved ComfyUI state dict of an init-offset LoRA ([B|-B0], [A;A0])."""
    state = {}
    r = lora.settings.rank
    for name in lora.names:
        up = lora_file[f"diffusion_model.{name}.lora_up.weight"]
        down = lora_file[f"diffusion_model.{name}.lora_down.weight"]
        state[f"{name}.lora_A"], state[f"{name}.lora_B"] = down[:r], up[:, :r]
        state[f"{name}.init_A"], state[f"{name}.init_B"] = down[r:], -up[:, r:]
    return state


def test_lokr_file_reproduces_peft_weights_in_stock_comfyui(comfy, core, caplog):
    """LoKr trains through peft and saves LyCORIS keys; ComfyUI's calculate_weight gives peft's delta for every layer."""
    model, examples = training_data.model_and_examples(comfy)
    before = snapshot(model)
    for factor in (-1, 4):  # factor 4 decomposes w2 into a low-rank product (alpha applies), -1 keeps full matrices
        settings = core.settings.TrainSettings(steps=3, learning_rate=1e-2, rank=4, adapter="lokr", lokr_factor=factor,
                                               caption_dropout=0.0)
        with torch.inference_mode():
            trained = core.loop.train_flux_lora(model, examples, settings)
        with torch.inference_mode(False), core.loop.training_patcher(model, examples, settings) as (patcher, lora, _):
            lora.load_trainable_state({k: v for k, v in _lokr_state(trained, lora).items()})
            expected = {n: l.get_delta_weight("default").detach().float() for n, l in lora.layers.items()}
        _assert_stock_loader_gives(core, model, trained, "methods/lokr", expected, caplog)
        assert any(d.abs().max() > 0 for d in expected.values())
    with pytest.raises(ValueError, match="LyCORIS"):
        core.export.lora_file_bytes(trained, "diffusers")
    assert_clean(before, snapshot(model))


def test_loha_file_reproduces_peft_weights_in_stock_comfyui(comfy, core, caplog):
    """LoHa trains through peft and saves LyCORIS keys (hada_w1_a/_b, hada_w2_a/_b, alpha); stock LoraLoader loads every
    key and ComfyUI's calculate_weight gives peft's delta ((w1_a w1_b) * (w2_a w2_b) * alpha/rank) for every layer."""
    model, examples = training_data.model_and_examples(comfy)
    before = snapshot(model)
    settings = core.settings.TrainSettings(steps=3, learning_rate=1e-2, rank=4, alpha=8.0, adapter="loha",
                                           caption_dropout=0.0)
    with torch.inference_mode():
        trained = core.loop.train_flux_lora(model, examples, settings)
    layers = {k.rsplit(".", 1)[0] for k in trained}
    assert all(set(trained) >= {f"{l}.{s}" for s in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha")}
               for l in layers)
    with torch.inference_mode(False), core.loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        lora.load_trainable_state({f"{n}.{suffix}": trained[f"diffusion_model.{n}.{suffix}"]
                                   for n in lora.names for suffix, _ in core_params(lora, n)})
        expected = {n: l.get_delta_weight("default").detach().float() for n, l in lora.layers.items()}
    _assert_stock_loader_gives(core, model, trained, "methods/loha", expected, caplog)
    assert all(d.abs().max() > 0 for d in expected.values())  # every layer trained (w2_b starts at zero)
    meta = core.export.metadata(trained.info, "kohya", "fp32")
    assert meta["ss_network_module"] == "lycoris.kohya" and '"algo": "loha"' in meta["ss_network_args"]
    with pytest.raises(ValueError, match="LoHa.*kohya"):
        core.export.lora_file_bytes(trained, "diffusers")
    with pytest.raises(ValueError, match="LoHa trains with its own initialisation"):
        core.settings.TrainSettings(adapter="loha", init="pissa")
    assert_clean(before, snapshot(model))


def _assert_stock_loader_gives(core, model, trained, name, expected, caplog):
    """Saves ``trained`` in the kohya format, loads it with stock LoraLoaderModelOnly (no key left unloaded) and checks
    that ComfyUI's calculate_weight gives the ``expected`` delta of every one of the 26 targeted layers."""
    import nodes
    from comfy.lora import calculate_weight
    file_name, _ = core.export.save_to_loras(trained, name, "kohya", "fp32")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        patched = nodes.LoraLoaderModelOnly().load_lora_model_only(model, file_name, 1.0)[0]
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
    dm = model.model.diffusion_model
    assert len(patched.patches) == len(expected) == 26
    for layer, delta in expected.items():
        key = f"diffusion_model.{layer}.weight"
        w = dm.get_parameter(f"{layer}.weight").detach().float()
        got = calculate_weight(patched.patches[key], w.clone(), key)
        torch.testing.assert_close(got - w, delta, rtol=1e-4, atol=1e-6, msg=layer)


def _lokr_state(trained, lora):
    """The trained adapter state from the LoKr file's weights (the full-matrix scale undone)."""
    state = {}
    for name in lora.names:
        for suffix, p in core_params(lora, name):
            value = trained[f"diffusion_model.{name}.{suffix}"]
            if suffix == "lokr_w2" and f"diffusion_model.{name}.alpha" not in trained:
                value = value / lora.layers[name].scaling["default"]
            state[f"{name}.{suffix}"] = value
    return state


def core_params(lora, name):
    import importlib
    mod = importlib.import_module(type(lora).__module__)
    return mod._adapter_params(lora.layers[name], "default")


def test_differential_output_preservation(comfy, core):
    """The preservation target is the untouched model's own prediction (the adapters taken out of the same clone); at
    the start (B = 0) the two agree exactly, and the preservation term changes the training."""
    model, examples = training_data.model_and_examples(comfy)
    _, clip, vae = training_data.load_models(comfy)
    before = snapshot(model)
    text = core.examples.encode_text(clip, "a thing")
    settings = core.settings.TrainSettings(rank=4, caption_dropout=0.0)
    x = torch.randn(2, *examples[0].latent.shape, generator=torch.Generator().manual_seed(0))
    s = torch.tensor([0.4, 0.6])
    with torch.inference_mode(False), core.loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        assert core.preservation.differential_output_loss(patcher, lora, x, s, text, 1.0).item() == 0.0
        for p in lora.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)) * 0.05)
        assert lora.attached
        loss = core.preservation.differential_output_loss(patcher, lora, x, s, text, 1.0)
        assert loss.item() > 0 and loss.requires_grad and lora.attached
        with torch.no_grad():
            lora.detach()
            base = core.predict.predict_velocity(patcher, x, s, text[0][None].expand(2, -1, -1),
                                                 text[1][None].expand(2, -1), 1.0)
            lora.attach()
    shared = model.clone()  # the shared model's own prediction, no adapters anywhere
    import comfy.model_management as mm
    with torch.inference_mode():
        mm.load_models_gpu([shared])
        ref = core.predict.predict_velocity(shared, x, s, text[0][None].expand(2, -1, -1), text[1][None].expand(2, -1), 1.0)
    mm.unload_all_models()
    torch.testing.assert_close(base, ref, rtol=1e-5, atol=1e-5)
    assert_clean(before, snapshot(model))


def test_regularization_images_are_trained_alongside(comfy, core, pack_nodes):
    model, clip, vae = training_data.load_models(comfy)
    dataset = training_data.dataset(comfy)
    reg = core.dataset.dataset_from_images(torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(4)), ["", ""])
    settings = core.settings.TrainSettings(steps=3, rank=4, caption_dropout=0.0, preservation="regularization images",
                                           class_prompt="a thing")
    with torch.inference_mode():
        with_reg = core.run.train_run(model, clip, vae, dataset, settings, regularization=reg)
        plain = core.run.train_run(model, clip, vae, dataset, settings.with_changes(preservation="off"))
        assert with_reg.captions_encoded >= 1  # the class prompt captions the uncaptioned class images
        assert any(not torch.equal(with_reg.lora[k], plain.lora[k]) for k in plain.lora)
        with pytest.raises(ValueError, match="no dataset is connected"):
            core.run.train_run(model, clip, vae, dataset, settings)
        with pytest.raises(ValueError, match="a dataset is connected but preservation is 'off'"):
            core.run.train_run(model, clip, vae, dataset, settings.with_changes(preservation="off"), regularization=reg)


def test_class_images_are_rendered_once(comfy, core, pack_nodes, monkeypatch):
    model, clip, vae = training_data.load_models(comfy)
    node = pack_nodes.class_images.ClassImages
    args = dict(model=model, clip=clip, vae=vae, prompt="a photo of a thing", count=3, width=64, height=64, steps=2,
                guidance=3.5, seed=7)
    first = node.execute(**args).result[0]
    assert len(first.images) == 3 and all(im.caption == "a photo of a thing" for im in first.images)
    assert len({im.sha256 for im in first.images}) == 3  # different seeds, different images
    monkeypatch.setattr(core.class_images, "render", lambda *a, **k: pytest.fail("rendered again"))
    again = node.execute(**args).result[0]
    assert [im.sha256 for im in again.images] == [im.sha256 for im in first.images]


def test_prodigy_trains_and_asks_for_learning_rate_one(comfy, core):
    model, examples = training_data.model_and_examples(comfy)
    with torch.inference_mode():
        lora = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(
            steps=3, rank=4, optimizer="prodigy", learning_rate=1.0, caption_dropout=0.0))
    assert len(lora.losses) == 3 and any(v.abs().max() > 0 for k, v in lora.items() if "lora_up" in k)
    with pytest.raises(ValueError, match="prodigy finds its own step size.*set learning_rate to 1.0"):
        core.settings.TrainSettings(optimizer="prodigy", learning_rate=1e-4)


def test_incompatible_method_choices_are_refused_early(core):
    with pytest.raises(ValueError, match="LoKr trains with its own initialisation and without DoRA"):
        core.settings.TrainSettings(adapter="lokr", use_dora=True)
    with pytest.raises(ValueError, match="cannot be combined with DoRA"):
        core.settings.TrainSettings(init="pissa", use_dora=True)
    with pytest.raises(ValueError, match="needs a class_prompt"):
        core.settings.TrainSettings(preservation="differential output")


def test_a_damaged_class_image_in_the_cache_is_rendered_again(comfy, core, pack_nodes, caplog):
    """A truncated PNG in the class-images cache stopped the node with PIL's own error; it is a cache: that image is
    rendered again (the others are read back) and the log says so."""
    model, clip, vae = training_data.load_models(comfy)
    node = pack_nodes.class_images.ClassImages
    args = dict(model=model, clip=clip, vae=vae, prompt="a photo of a damaged thing", count=3, width=64, height=64,
                steps=2, guidance=3.5, seed=11)
    first = node.execute(**args).result[0]
    damaged = Path(first.folder) / first.images[1].name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])   # cut off, as by a crash or full disk
    with caplog.at_level(logging.WARNING):
        again = node.execute(**args).result[0]
    assert [im.sha256 for im in again.images] == [im.sha256 for im in first.images]   # the same seed, the same image
    assert any(f"cached class image {damaged} is damaged" in r.getMessage() and "rendering it again" in r.getMessage()
               for r in caplog.records)
    assert again.notes == ("1 rendered now, 2 from disk (1 damaged on disk and rendered again)",)
    assert hashlib.sha256(damaged.read_bytes()).hexdigest() == first.images[1].sha256   # the cache entry is whole again
