"""A wrong MODEL, CLIP or VAE is refused with a message naming the node to change, before any image or caption is
encoded (and before Test Sampler samples); NaN inputs are refused with a message."""
import types

import pytest
import torch

import training_data


@pytest.fixture
def no_encoding(core, monkeypatch):
    monkeypatch.setattr(core.examples.Encoder, "examples", lambda *a, **k: pytest.fail("encoded before the check"))


def _train(comfy, core, model=None, clip=None, vae=None):
    m, c, v = training_data.load_models(comfy)
    with torch.inference_mode():
        return core.run.train_run(model or m, clip or c, vae or v, training_data.dataset(comfy),
                                  core.settings.TrainSettings(steps=1))


def test_non_flux_clip_is_refused(comfy, core, no_encoding):
    sd_like = types.SimpleNamespace(cond_stage_model=torch.nn.Linear(2, 2), patcher=None)
    with pytest.raises(ValueError, match="CLIP input is a Linear text encoder.*DualCLIPLoader.*type 'flux'"):
        _train(comfy, core, clip=sd_like)


def test_flux_clip_of_another_width_is_refused(comfy, core, no_encoding):
    import tiny_models
    from comfy.text_encoders.flux import FluxClipModel
    options = tiny_models.tiny_te_options()
    options["t5xxl_model_config"] = {**options["t5xxl_model_config"], "d_model": 48}
    wide = FluxClipModel(dtype=torch.float32, device="cpu", model_options=options)
    with pytest.raises(ValueError, match="T5 gives 48-wide text features but this FLUX.1 model reads 32"):
        _train(comfy, core, clip=types.SimpleNamespace(cond_stage_model=wide, patcher=None))


def test_vae_with_other_latents_is_refused_also_by_the_test_sampler(comfy, core, pack_nodes, no_encoding):
    sd_vae = types.SimpleNamespace(latent_channels=4, patcher=None)
    with pytest.raises(ValueError, match="VAE makes 4-channel latents; this FLUX.1 model needs 16-channel latents"):
        _train(comfy, core, vae=sd_vae)
    model, clip, _ = training_data.load_models(comfy)
    with pytest.raises(ValueError, match="VAE makes 4-channel latents"):
        pack_nodes.sampler.TestSampler.execute(prompts="a thing", trigger="", width=64, height=64, steps=1, guidance=3.5,
                                               seed=0, every_n_steps=1, model=model, clip=clip, vae=sd_vae)


def test_schnell_without_its_training_adapter_is_refused(comfy, core, no_encoding):
    import nodes
    schnell = nodes.UNETLoader().load_unet(comfy["names"]["schnell"], "default")[0]
    assert not schnell.model.diffusion_model.params.guidance_embed
    with pytest.raises(ValueError, match="FLUX.1-schnell.*distillation.*FLUX.1-schnell-training-adapter.*assistant_lora"):
        _train(comfy, core, model=schnell)
    m, c, v = training_data.load_models(comfy)
    with pytest.raises(ValueError, match="train_guidance is 3.5, but FLUX.1 schnell has no distilled-guidance input"), \
            torch.inference_mode():
        core.run.train_run(schnell, c, v, training_data.dataset(comfy), core.settings.TrainSettings(
            steps=1, train_guidance=3.5, assistant_lora="anything.safetensors"))
    with pytest.raises(ValueError, match="assistant_lora 'missing.safetensors' is not in models/loras"), \
            torch.inference_mode():
        core.run.train_run(schnell, c, v, training_data.dataset(comfy), core.settings.TrainSettings(
            steps=1, assistant_lora="missing.safetensors"))


def test_nan_pixels_are_refused(core):
    images = torch.rand(2, 32, 32, 3)
    images[1, 3, 3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite pixel values"):
        core.dataset.dataset_from_images(images, ["a", "b"])
