"""LoRA gradients of one training step equal those of an independent out-of-place float32 reference
forward, with and without gradient checkpointing (relative error <= 1e-4), whether or not the caller is in ComfyUI's
training mode, on the installed Flux code and on a stand-in for the newer one (tests/support/newer_flux.py)."""
import contextlib

import pytest
import torch

import gradient_check
import newer_flux
import reference_flux
import training_data


def _stacked_lora_model(model):
    """The MODEL with a user LoRA already applied (as LoraLoader would), partially loaded ('lowvram'): ComfyUI
    then applies that LoRA on the fly through weight functions on the layers peft wraps."""
    import comfy.sd
    layers = ("double_blocks.0.img_attn.qkv", "single_blocks.1.linear1", "double_blocks.1.txt_mlp.0")
    return comfy.sd.load_lora_for_models(model, None, training_data.random_lora(model, layers, seed=11, scale=0.1),
                                         1.0, 0)[0]


# (checkpointing, stacked user LoRA, the caller is in ComfyUI's training mode). The trainer enters that mode itself
# (ComfyUI >= 0.14 takes its differentiable paths there); on the newer-Flux stand-in (flux_code) a forward outside it
# cannot be differentiated at all, so the cases without the caller's flag check that nothing depends on the caller.
CASES = [(True, False, False), (False, False, False), (True, True, False), (True, False, True), (False, False, True)]


@pytest.mark.parametrize("checkpointing,stacked,caller_flag", CASES)
def test_lora_gradients_match_reference(comfy, core, checkpointing, stacked, caller_flag, flux_code, monkeypatch):
    import comfy.model_management as mm
    from comfy.lora import calculate_weight
    if caller_flag and not hasattr(mm, "in_training"):
        pytest.skip("this ComfyUI has no in_training flag for a caller to set (it arrived in ComfyUI v0.14)")
    loop, objective = core.loop, core.objective
    model, examples = training_data.model_and_examples(comfy)
    patched_weights = {}
    if stacked:
        model = _stacked_lora_model(model)
        dm = model.model.diffusion_model
        for key, patches in model.patches.items():
            name = key[len("diffusion_model."):]
            patched_weights[name] = calculate_weight(patches, dm.get_parameter(name).detach().float().clone(), key)
        # force ComfyUI's partial-load path: patched layers keep their stored weight + a LowVramPatch weight function
        monkeypatch.setattr(loop.mm, "load_models_gpu",
                            lambda models, memory_required=0, **kw: models[0].patch_model("cpu", lowvram_model_memory=1))
    settings = core.settings.TrainSettings(gradient_checkpointing=checkpointing, batch_size=2, train_guidance=1.0,
                                           rank=4, alpha=8.0, caption_dropout=0.0)
    with torch.inference_mode(False):
        with loop.training_patcher(model, examples, settings) as (patcher, lora, _):
            g = torch.Generator().manual_seed(3)
            for p in lora.parameters():  # B starts at zero (A would get no gradient): make both non-trivial
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            if stacked:
                layer = patcher.model.diffusion_model.get_submodule("double_blocks.0.img_attn.qkv.base_layer")
                assert layer.comfy_cast_weights and len(layer.weight_function) == 1  # LoRA applied on the fly
            with core.comfy_features.comfy_training_mode() if caller_flag else contextlib.nullcontext():
                loss = loop.batch_loss(patcher, examples, [0, 1], settings, torch.Generator().manual_seed(7), "cpu")
                loss.backward()
            frozen = [(n, p) for n, p in patcher.model.diffusion_model.named_parameters() if ".lora_" not in n]
            assert frozen and all(not p.requires_grad and p.grad is None for _, p in frozen)  # no full-size weight gradients
            ours = {n: (lora.layers[n].lora_A["default"].weight.grad.clone(), lora.layers[n].lora_B["default"].weight.grad.clone())
                    for n in lora.names}
            leaves = {n: (lora.layers[n].lora_A["default"].weight.detach().clone().requires_grad_(True),
                          lora.layers[n].lora_B["default"].weight.detach().clone().requires_grad_(True), 8.0 / 4)
                      for n in lora.names}
            reference = reference_flux.Reference(patcher.model.diffusion_model, leaves, patched_weights)
        if stacked:
            model.unpatch_model("cpu")

        # the same noise / sigmas as batch_loss draws from a generator seeded with 7
        gen = torch.Generator().manual_seed(7)
        x0 = torch.stack([examples[0].latent, examples[1].latent])
        noise = torch.randn(x0.shape, generator=gen)
        sigmas = objective.sample_sigmas("sigmoid", 2, gen, image_tokens=(x0.shape[-2] // 2) * (x0.shape[-1] // 2))
        xt = objective.noisy_latents(x0, noise, sigmas)
        pred = reference(xt, sigmas, torch.stack([e.context for e in examples[:2]]),
                         torch.stack([e.pooled for e in examples[:2]]), torch.full((2,), 1.0))
        ref_loss = ((pred - (noise - x0)) ** 2).reshape(2, -1).mean(1).mean()
        ref_loss.backward()

    assert torch.allclose(loss.detach(), ref_loss.detach(), rtol=1e-5), (loss.item(), ref_loss.item())
    assert len(ours) == 26  # 10 per double block x 2 + 3 per single block x 2
    worst = 0.0
    for name, (ga, gb) in ours.items():
        ra, rb = leaves[name][0].grad, leaves[name][1].grad
        for got, want in ((ga, ra), (gb, rb)):
            assert want.abs().max() > 0
            rel = ((got - want).abs().max() / want.abs().max()).item()
            worst = max(worst, rel)
            assert rel <= 1e-4, f"{name}: relative gradient error {rel:.2e}"
    print(f"max relative LoRA gradient error: {worst:.2e}")


@pytest.mark.parametrize("checkpointing", [True, False])
def test_gradients_do_not_depend_on_the_caller_or_on_the_newer_flux_code(comfy, core, checkpointing):
    """batch_loss and its backward give bit-identical loss and LoRA gradients whether or not the caller is in ComfyUI's
    training mode, on the installed Flux code and on the newer-Flux stand-in; the flag is back as it was after the
    forward (so a checkpointed block's recompute in backward must enter the mode itself) and after the backward."""
    import comfy.model_management as mm
    loop = core.loop
    model, examples = training_data.model_and_examples(comfy)
    settings = core.settings.TrainSettings(gradient_checkpointing=checkpointing, batch_size=2, rank=4,
                                           caption_dropout=0.0)
    results = {}
    with torch.inference_mode(False), loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        gradient_check.randomize(lora)
        for code in ("as installed", "newer stand-in"):
            with pytest.MonkeyPatch.context() as mp:
                if code == "newer stand-in":
                    newer_flux.install(mp)
                for caller_flag in (False, True):
                    with core.comfy_features.comfy_training_mode() if caller_flag else contextlib.nullcontext():
                        generator = torch.Generator().manual_seed(7)
                        loss = loop.batch_loss(patcher, examples, [0, 1], settings, generator, "cpu")
                        assert getattr(mm, "in_training", caller_flag) is caller_flag
                        loss.backward()
                    assert getattr(mm, "in_training", False) is False
                    results[code, caller_flag] = (loss.detach(), [p.grad.clone() for p in lora.parameters()])
                    for p in lora.parameters():
                        p.grad = None
    loss, grads = results["as installed", True]
    assert len(results) == 4 and all(g.abs().max() > 0 for g in grads)
    for key, (other_loss, other_grads) in results.items():
        assert torch.equal(other_loss, loss) and all(torch.equal(a, b) for a, b in zip(other_grads, grads)), key
