"""Samples at checkpoints (trainer/sampling.py): rendering them leaves training unchanged, they are what LoraLoader
gives, and the trigger word follows the Test Sampler's own input first."""
import math

import torch

import training_data
from recording import RecordingHooks


def _settings(core, **kw):
    return core.settings.TrainSettings(**{"steps": 4, "learning_rate": 1e-2, "seed": 5, "caption_dropout": 0.0, **kw})


def test_previews_leave_training_unchanged(comfy, core):
    """Same seed with and without rendering samples at checkpoints -> the same LoRA, byte for byte."""
    sampling = core.sampling
    model, examples = training_data.model_and_examples(comfy)
    _, clip, vae = training_data.load_models(comfy)
    prompts = sampling.PromptSet(clip, sampling.SampleSettings(("{trigger} a red thing", "a blue thing"), 64, 64, 2, 3.5, 7),
                                 "tok")
    hooks = RecordingHooks(checkpoint_every=2, on_checkpoint=lambda step, weights: sampling.render(model, vae, prompts, weights))
    with torch.inference_mode():
        plain = core.loop.train_flux_lora(model, examples, _settings(core))
        with_previews = core.loop.train_flux_lora(model, examples, _settings(core), hooks)
    rendered = hooks.checkpoints
    assert [s for s, _ in rendered] == [2, 4] and rendered[0][1].shape == (2, 64, 64, 3)
    assert core.export.lora_file_bytes(plain, "kohya", "fp32") == core.export.lora_file_bytes(with_previews, "kohya", "fp32")
    assert not torch.equal(rendered[0][1], rendered[1][1])  # the LoRA changed between checkpoints
    # what the preview shows is what LoraLoader gives: rendering the final LoRA afterwards is identical
    assert torch.equal(sampling.render(model, vae, prompts, with_previews), rendered[-1][1])
    assert prompts.prompts == ["tok a red thing", "a blue thing"]


def test_sampler_trigger_wins_over_the_datasets(comfy, core):
    """Test Sampler's tooltip: its own trigger replaces {trigger}; empty, the trained dataset's trigger does."""
    s = core.sampling.SampleSettings(("{trigger} a red thing", "{trigger}, a cat"), trigger="mine")
    assert s.resolved_prompts("from_dataset") == ["mine a red thing", "mine, a cat"]
    s = core.sampling.SampleSettings(("{trigger} a red thing", "{trigger}, a cat"))
    assert s.resolved_prompts("from_dataset") == ["from_dataset a red thing", "from_dataset, a cat"]
    assert s.resolved_prompts("") == ["a red thing", "a cat"]


def test_weights_recreated_in_inference_mode_during_a_checkpoint_stay_trainable(comfy, core):
    """Another node may (re)create weights under inference mode while training waits (sampling loads offloaded
    modules that way on a GPU). Every reload of the training patcher must make them usable for backward again."""
    import comfy.utils as comfy_utils
    model, examples = training_data.model_and_examples(comfy)
    dm = model.model.diffusion_model
    name = "double_blocks.0.img_attn.proj.weight"

    def recreate(step, weights):
        with torch.inference_mode():
            comfy_utils.set_attr_param(dm, name, dm.get_parameter(name).detach().clone())
        assert dm.get_parameter(name).is_inference()
    with torch.inference_mode():
        lora = core.loop.train_flux_lora(model, examples, _settings(core), RecordingHooks(checkpoint_every=2,
                                                                                          on_checkpoint=recreate))
    assert len(lora.losses) == 4 and all(math.isfinite(v) for v in lora.losses)


def test_checkpoint_samples_equal_the_stock_nodes_output(comfy, core):
    """render() samples through comfy.sample (not ComfyUI's UI module): for the same LoRA, seed and prompt it gives the
    image stock CLIPTextEncode -> FluxGuidance, LoraLoaderModelOnly -> ModelSamplingFlux -> KSampler (euler, simple)
    -> VAEDecode give, exactly."""
    import node_helpers
    import nodes
    from comfy.sd import load_lora_for_models
    from comfy_extras.nodes_model_advanced import ModelSamplingFlux
    sampling = core.sampling
    model, examples = training_data.model_and_examples(comfy)
    _, clip, vae = training_data.load_models(comfy)
    with torch.inference_mode():
        lora = core.loop.train_flux_lora(model, examples, _settings(core, steps=2))
    prompts = sampling.PromptSet(clip, sampling.SampleSettings(("a red thing",), 64, 64, 3, 3.5, 11))
    ours = sampling.render(model, vae, prompts, lora)
    with torch.inference_mode():
        patched = load_lora_for_models(model, None, dict(lora), 1.0, 0)[0]   # what LoraLoaderModelOnly runs
        patched = ModelSamplingFlux().patch(patched, 1.15, 0.5, 64, 64)[0]
        positive = node_helpers.conditioning_set_values(nodes.CLIPTextEncode().encode(clip, "a red thing")[0],
                                                        {"guidance": 3.5})
        negative = nodes.CLIPTextEncode().encode(clip, "")[0]
        latent = nodes.EmptyLatentImage().generate(64, 64, 1)[0]
        out = nodes.KSampler().sample(patched, 11, 3, 1.0, "euler", "simple", positive, negative, latent)[0]
        stock = nodes.VAEDecode().decode(vae, out)[0]
    assert ours.shape == stock.shape == (1, 64, 64, 3)
    assert torch.equal(ours, stock.float().cpu())
    assert not torch.equal(ours, sampling.render(model, vae, prompts))   # the LoRA is in it
