"""FLUX.2 [klein] edit LoRAs with one or more reference images: the training forward gives the model the references
exactly as ComfyUI's sampling does with stock ReferenceLatent nodes chained once per image (FLUX.2's own reference
positions), a run with two references trains and samples *references | result*, and reference dropout trains random
subsets of several references."""
import pytest
import torch

import training_data


@pytest.fixture
def klein(comfy):
    if not training_data.family_available(comfy, "klein"):
        pytest.skip("this ComfyUI has no FLUX.2 [klein] text encoder (Qwen3 arrived after v0.8.0)")
    return training_data.load_family(comfy, "klein")


def _sampling_call(model, clip, vae, caption, reference_pixels, seed=3):
    """What ComfyUI's sampler hands the model for one Euler step of ``caption`` with ReferenceLatent nodes chained
    once per reference image: (noisy input, sigma, the conditioning's ref_latents, the velocity it predicts)."""
    import importlib
    sample = importlib.import_module("comfy.sample")
    from comfy_extras.nodes_edit_model import ReferenceLatent
    positive = clip.encode_from_tokens_scheduled(clip.tokenize(caption))
    for pixels in reference_pixels:
        positive = ReferenceLatent.execute(positive, {"samples": vae.encode(pixels[None])}).result[0]
    negative = clip.encode_from_tokens_scheduled(clip.tokenize(""))
    seen = {}

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        seen.update(x=args["input"].clone(), sigma=args["timestep"].clone(), refs=args["c"].get("ref_latents"), out=out)
        return out
    patched = model.clone()
    patched.set_model_unet_function_wrapper(wrapper)
    h, w = reference_pixels[0].shape[:2]
    latent = torch.zeros(1, 128, h // 16, w // 16)
    noise = sample.prepare_noise(latent, seed)
    sample.sample(patched, noise, 1, 1.0, "euler", "simple", positive, negative, latent, denoise=1.0, seed=seed,
                  disable_pbar=True)
    velocity = (seen["x"] - seen["out"]) / seen["sigma"].reshape(-1, 1, 1, 1)   # ComfyUI's flow output is x - sigma*v
    return seen["x"], seen["sigma"], seen["refs"], velocity


@pytest.mark.parametrize("references", [1, 2])
def test_the_training_forward_equals_comfyuis_sampling_forward(comfy, core, klein, references):
    """The same noisy latent, caption and reference images, the LoRA applied as LoraLoader applies it: the trainer's
    prediction (what the loss is computed on) equals the velocity ComfyUI's sampler gets from the model."""
    model, clip, vae = klein
    _, examples = training_data.family_paired_examples(comfy, "klein", references)
    dataset = training_data.paired_dataset(comfy, references)
    settings = core.settings.TrainSettings(steps=2, learning_rate=5e-2, rank=4, caption_dropout=0.0, save_every=0)
    with torch.inference_mode():
        lora = core.loop.train_flux_lora(model, examples[:2], settings)
    import comfy.sd
    with_lora, _ = comfy.sd.load_lora_for_models(model, None, dict(lora), 1.0, 0)
    image, example = dataset.images[0], examples[0]
    with torch.inference_mode():
        pixels = [c.float() / 255.0 for c in image.controls]
        x, sigma, refs, velocity = _sampling_call(with_lora, clip, vae, image.caption, pixels)
        assert len(refs) == references
        for ours, theirs in zip(example.references, refs):   # the same latents (VAE batching aside), in order
            assert torch.allclose(ours, theirs[0].float(), atol=1e-4)
        exact = core.predict.predict_velocity(with_lora, x, sigma, example.context[None], example.pooled[None], 1.0,
                                              list(refs))
        ours = core.predict.predict_velocity(with_lora, x, sigma, example.context[None], example.pooled[None], 1.0,
                                             [r[None] for r in example.references])
        plain = core.predict.predict_velocity(with_lora, x, sigma, example.context[None], example.pooled[None], 1.0)
        swapped = core.predict.predict_velocity(with_lora, x, sigma, example.context[None], example.pooled[None], 1.0,
                                                [r[None] for r in reversed(example.references)])
    assert torch.allclose(exact, velocity.float(), atol=1e-5, rtol=1e-5), (exact - velocity).abs().max()
    assert torch.allclose(ours, velocity.float(), atol=1e-3), (ours - velocity).abs().max()
    assert (ours - plain).abs().max() > 1e-3   # the references do change the prediction
    if references == 2:   # FLUX.2 places each reference at its own time index: the order matters
        assert (ours - swapped).abs().max() > 1e-4


def test_reference_dropout_trains_subsets_of_several_references(comfy, core, klein, monkeypatch):
    model, examples = training_data.family_paired_examples(comfy, "klein", 2)
    counts = []
    real = core.loop.predict_velocity
    monkeypatch.setattr(core.loop, "predict_velocity", lambda *a, **k: counts.append(len(a[-1])) or real(*a, **k))
    settings = dict(steps=16, learning_rate=1e-2, rank=4, caption_dropout=0.0)
    with torch.inference_mode():
        core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(**settings))
        assert counts == [2] * 16
        counts.clear()
        core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(**settings, reference_dropout=0.6))
    assert set(counts) == {0, 1, 2}, counts


def test_a_klein_edit_run_with_two_references_samples_references_then_result(comfy, core, klein, tmp_path):
    """Checkpoint samples edit the first pair's two references (the empty negative prompt gets them too: with real CFG
    only the text differs) and show references | result."""
    ds = training_data.paired_dataset(comfy, 2)
    out, conds = training_data.sampled_paired_run(core, klein, ds, "swap the colors", str(tmp_path / "cache"))
    assert out.images_encoded == 3 * len(ds.images)   # targets and two references each
    assert conds and all(len(c[0][1]["reference_latents"]) == 2 for pair in conds for c in pair)
    assert out.sample_grid.shape[2] - 110 == 3 * out.sample_grid.shape[1]   # one row: ref 1 | ref 2 | sample
    assert "edit pairs with 2 reference images each" in core.dataset.report(ds)


def test_the_memory_plan_counts_every_reference(comfy, core, klein, monkeypatch):
    model, clip, vae = klein
    planned = []
    real = core.run.plan_run
    monkeypatch.setattr(core.run, "plan_run", lambda m, s, tokens, *a, **k: planned.append(tokens) or real(m, s, tokens,
                                                                                                          *a, **k))
    class Planned(Exception):
        pass

    def stop(*args, **kwargs):
        raise Planned()
    monkeypatch.setattr(core.examples.Encoder, "examples", stop)   # nothing to encode: the plan is what is checked
    for references in (0, 1, 2):
        ds = training_data.dataset(comfy) if references == 0 else training_data.paired_dataset(comfy, references)
        with pytest.raises(Planned):
            core.run.train_run(model, clip, vae, ds, core.settings.TrainSettings(steps=1))
    tokens = (64 // 16) ** 2
    assert planned == [tokens, 2 * tokens, 3 * tokens]


def test_test_sampler_takes_a_batch_of_references(comfy, klein, pack_nodes):
    """Test Sampler's reference_image as an IMAGE batch: every image a reference, in order, shown first in the row;
    the order changes the result (each reference has its own FLUX.2 position)."""
    model, clip, vae = klein
    g = torch.Generator().manual_seed(0)
    references = torch.rand(2, 64, 64, 3, generator=g)
    common = dict(prompts="put the thing into the scene", trigger="", width=64, height=64, steps=1, guidance=4.0,
                  seed=0, every_n_steps=1, model=model, clip=clip, vae=vae)
    with torch.inference_mode():
        one = pack_nodes.sampler.TestSampler.execute(**common, reference_image=references[:1]).result[1]
        two = pack_nodes.sampler.TestSampler.execute(**common, reference_image=references).result[1]
        swapped = pack_nodes.sampler.TestSampler.execute(**common, reference_image=references.flip(0)).result[1]
    assert two.shape[2] - one.shape[2] == 64   # one more tile: both references, then the sample
    assert (two[:, :, -64:] - swapped[:, :, -64:]).abs().max() > 1e-3


def test_image_tokens_follow_the_models_patches(comfy, core, klein):
    """FLUX.2 latents (128 channels at 1/16) are one token per latent pixel, FLUX.1's (16 at 1/8) one per 2x2: the
    resolution-dependent sigma shift and the memory plan count the tokens the model sees, references included."""
    model, examples = training_data.family_paired_examples(comfy, "klein", 2)
    flux1, flux1_examples = training_data.paired_examples(comfy)
    assert (core.loop.patch_size(model), core.loop.patch_size(flux1)) == (1, 2)
    assert core.loop.largest_image_tokens(examples, 1) == 3 * (64 // 16) ** 2   # the image and two references
    assert core.loop.largest_image_tokens(flux1_examples, 2) == 2 * (64 // 16) ** 2
