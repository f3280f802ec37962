"""LoRA gradients of one training step equal those of an independent out-of-place float32 reference
forward, with and without gradient checkpointing (relative error <= 1e-4)."""
import contextlib

import pytest
import torch

import reference_flux
import training_data


def _stacked_lora_model(model):
    """The MODEL with a user LoRA already applied (as LoraLoader would), partially loaded ('lowvram'): ComfyUI
    then applies that LoRA on the fly through weight functions on the layers peft wraps."""
    import comfy.sd
    layers = ("double_blocks.0.img_attn.qkv", "single_blocks.1.linear1", "double_blocks.1.txt_mlp.0")
    return comfy.sd.load_lora_for_models(model, None, training_data.random_lora(model, layers, seed=11, scale=0.1),
                                         1.0, 0)[0]


def _cases():
    """(checkpointing, stacked user LoRA, ComfyUI's in_training flag set). The flag exists from ComfyUI v0.14 on and
    switches Flux RoPE from comfy-kitchen's kernel to pure torch: both paths are checked where both exist."""
    import comfy.model_management as mm
    cases = [(True, False, False), (False, False, False), (True, True, False)]
    if hasattr(mm, "in_training"):
        cases.append((True, False, True))
    return cases


@pytest.mark.parametrize("checkpointing,stacked,training_mode", _cases())
def test_lora_gradients_match_reference(comfy, core, checkpointing, stacked, training_mode, monkeypatch):
    from comfy.lora import calculate_weight
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
            with core.comfy_features.comfy_training_mode() if training_mode else contextlib.nullcontext():
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
