"""FLUX.1 Kontext edit LoRAs: paired examples carry the control image's latent, which enters the forward as ComfyUI's
reference latents; LoRA gradients equal an independent forward extended with the reference tokens (also on the
stand-in for newer ComfyUI's Flux code, see flux_code); samples edit a reference image."""
import pytest
import torch

import gradient_check
import training_data


def test_kontext_lora_gradients_match_the_reference_with_reference_tokens(comfy, core, flux_code):
    loop, objective = core.loop, core.objective
    model, examples = training_data.paired_examples(comfy)
    assert all(len(e.references) == 1 and e.references[0].shape == e.latent.shape for e in examples)
    settings = core.settings.TrainSettings(batch_size=2, rank=4, alpha=8.0, caption_dropout=0.0)
    with torch.inference_mode(False):
        with loop.training_patcher(model, examples, settings) as (patcher, lora, _):
            gradient_check.randomize(lora)
            loss = loop.batch_loss(patcher, examples, [0, 1], settings, torch.Generator().manual_seed(7), "cpu")
            loss.backward()
            ours, leaves = gradient_check.trainer_gradients(lora, 8.0 / 4)
            dm = patcher.model.diffusion_model
            ref_loss = gradient_check.reference_loss(objective, dm, leaves, examples, with_references=True)
            with torch.no_grad():   # the reference tokens do change the prediction
                plain = gradient_check.reference_loss(objective, dm, leaves, examples)
        assert abs(ref_loss.item() - plain.item()) > 1e-4
        ref_loss.backward()
    assert torch.allclose(loss.detach(), ref_loss.detach(), rtol=1e-5), (loss.item(), ref_loss.item())
    gradient_check.assert_gradients_match(ours, leaves)


def test_reference_dropout_trains_some_steps_without_the_control(comfy, core, monkeypatch):
    model, examples = training_data.paired_examples(comfy)
    seen = []
    real = core.loop.predict_velocity
    monkeypatch.setattr(core.loop, "predict_velocity", lambda *a, **k: seen.append(len(a[-1]) > 0) or real(*a, **k))
    settings = dict(steps=12, learning_rate=1e-2, rank=4, caption_dropout=0.0)
    with torch.inference_mode():
        core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(**settings))
        assert seen == [True] * 12
        seen.clear()
        core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(**settings, reference_dropout=0.5))
    assert 0 < seen.count(False) < 12, seen


def test_reference_dropout_without_pairs_is_refused_before_encoding(comfy, core, monkeypatch):
    model, clip, vae = training_data.load_models(comfy)
    monkeypatch.setattr(core.examples.Encoder, "examples", lambda *a, **k: pytest.fail("encoded before the check"))
    with pytest.raises(ValueError, match="reference_dropout is 0.3, but the dataset has no control images"):
        core.run.train_run(model, clip, vae, training_data.dataset(comfy),
                           core.settings.TrainSettings(steps=1, reference_dropout=0.3))


def test_paired_training_run_samples_edit_the_control_image(comfy, core, tmp_path):
    """Through train_run: the dataset's pairs train with references, and checkpoint samples are conditioned on a
    control image (ReferenceLatent's conditioning key) and show it first in their row."""
    ds = training_data.paired_dataset(comfy)
    out, conds = training_data.sampled_paired_run(core, training_data.load_models(comfy), ds, "make it red",
                                                  str(tmp_path / "cache"))
    conds = [positive for positive, _ in conds]
    assert out.images_encoded == 2 * len(ds.images)   # targets and controls
    assert conds and all("reference_latents" in c[0][1] for c in conds), [list(c[0][1]) for c in conds]
    assert out.sample_grid.shape[2] - 110 == 2 * out.sample_grid.shape[1]   # one row: control | sample (110: label)


def test_cached_latents_are_keyed_by_the_pair(comfy, core, tmp_path):
    from dataclasses import replace
    model, clip, vae = training_data.load_models(comfy)
    ds = training_data.paired_dataset(comfy)
    cache = core.cache.EncodingCache(str(tmp_path / "cache"))

    def encoded(dataset):
        encoder = core.examples.Encoder(model, clip, vae, cache)
        with torch.inference_mode():
            examples = encoder.examples(core.examples.sources_from_dataset(dataset))
        return encoder.images_encoded, examples
    first, examples = encoded(ds)
    again, cached = encoded(ds)
    assert (first, again) == (2 * len(ds.images), 0)
    assert all(torch.equal(a.references[0], b.references[0]) for a, b in zip(examples, cached))
    other = ds.with_images([replace(ds.images[0], controls=(ds.images[0].pixels,), control_sha256s=("other",))] +
                           list(ds.images[1:]))
    changed, examples = encoded(other)
    assert changed == 2 and not torch.equal(examples[0].references[0], cached[0].references[0])


def test_test_sampler_edits_a_reference_image(comfy, pack_nodes):
    model, clip, vae = training_data.load_models(comfy)
    reference = torch.rand(1, 64, 96, 3)
    common = dict(prompts="make it red", trigger="", width=64, height=64, steps=1, guidance=2.5, seed=0,
                  every_n_steps=1, model=model, clip=clip, vae=vae)
    with torch.inference_mode():
        plain = pack_nodes.sampler.TestSampler.execute(**common).result[1]
        edited = pack_nodes.sampler.TestSampler.execute(**common, reference_image=reference).result[1]
    assert edited.shape[2] - plain.shape[2] == 64   # one more tile in the row: the reference first
