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


def _train_with(comfy, core, model, **settings):
    _, clip, vae = training_data.load_models(comfy)
    with torch.inference_mode():
        return core.run.train_run(model, clip, vae, training_data.dataset(comfy),
                                  core.settings.TrainSettings(steps=1, caption_dropout=0.0, **settings))


def test_adapters_an_fp8_model_cannot_train_are_refused_before_encoding(comfy, core, no_encoding):
    """DoRA and the PiSSA / OLoRA / LoRA-GA inits need the dense base weights: on an fp8 MODEL they were refused only
    when the adapters were built, after every image and caption was encoded."""
    import nodes
    fp8 = nodes.UNETLoader().load_unet(comfy["names"]["unet"], "fp8_e4m3fn")[0]
    with pytest.raises(ValueError, match="DoRA needs unquantized base weights, but this MODEL stores torch.float8_e4m3fn.*"
                                         "weight_dtype 'default'"):
        _train_with(comfy, core, fp8, use_dora=True)
    for init in ("pissa", "olora", "lora_ga"):
        with pytest.raises(ValueError, match=f"init '{init}' needs unquantized base weights"):
            _train_with(comfy, core, fp8, init=init, base_weights="as loaded")


def test_a_lora_ga_rank_wider_than_a_layer_is_refused_before_encoding(comfy, core, no_encoding):
    """LoRA-GA takes 2 x rank directions of each layer's gradient: rank 33 on the tiny model's 64-wide layers crashed
    after encoding with 'mat1 and mat2 shapes cannot be multiplied'."""
    model, _, _ = training_data.load_models(comfy)
    with pytest.raises(ValueError, match=r"init 'lora_ga' takes 2 x rank = 66 directions.*only 64 wide.*Set rank to "
                                         r"32 or less, or use init 'pissa' or 'olora'"):
        _train_with(comfy, core, model, init="lora_ga", rank=33)


def test_lora_ga_trains_at_the_widest_rank_it_allows(comfy, core):
    model, examples = training_data.model_and_examples(comfy)
    with torch.inference_mode():
        lora = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(
            steps=1, rank=32, init="lora_ga", caption_dropout=0.0))
    assert lora["diffusion_model.double_blocks.0.img_attn.proj.lora_down.weight"].shape[0] == 64   # rank 2r


def _attention_probe(q, k, v, pe=None, attn_mask=None, extra_options=None):
    return {"q": q}


def test_a_model_with_attention_patches_is_refused_before_encoding(comfy, core, no_encoding):
    """The training forward cannot stand in for another node's block or attention patches: refused from the MODEL alone,
    before encoding (it was refused only when the training blocks were installed, after it)."""
    model, _, _ = training_data.load_models(comfy)
    patched = model.clone()
    patched.set_model_attn1_patch(_attention_probe)
    with pytest.raises(ValueError, match="attention patches from another node"):
        _train_with(comfy, core, patched)
