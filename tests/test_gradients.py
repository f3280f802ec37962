"""LoRA gradients of one training step equal those of an independent out-of-place float32 reference
forward, with and without gradient checkpointing (relative error <= 1e-4)."""
import importlib

import pytest
import torch

import reference_flux
import training_data


@pytest.mark.parametrize("checkpointing", [True, False])
def test_lora_gradients_match_reference(comfy, pack, checkpointing):
    loop = importlib.import_module(f"{pack.__name__}.trainer.loop")
    objective = importlib.import_module(f"{pack.__name__}.trainer.objective")
    LoraSettings = importlib.import_module(f"{pack.__name__}.trainer.lora").LoraSettings
    model, examples = training_data.model_and_examples(comfy, pack)
    settings = loop.TrainSettings(gradient_checkpointing=checkpointing, batch_size=2, guidance=1.0,
                                  lora=LoraSettings(rank=4, alpha=8.0))
    with torch.inference_mode(False):
        with loop.training_patcher(model, examples, settings) as (patcher, lora, _):
            g = torch.Generator().manual_seed(3)
            for p in lora.parameters():  # B starts at zero (A would get no gradient): make both non-trivial
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            loss = loop.batch_loss(patcher, examples, [0, 1], settings, torch.Generator().manual_seed(7), "cpu")
            loss.backward()
            ours = {n: (lora.layers[n].lora_A["default"].weight.grad.clone(), lora.layers[n].lora_B["default"].weight.grad.clone())
                    for n in lora.names}
            leaves = {n: (lora.layers[n].lora_A["default"].weight.detach().clone().requires_grad_(True),
                          lora.layers[n].lora_B["default"].weight.detach().clone().requires_grad_(True), 8.0 / 4)
                      for n in lora.names}
            reference = reference_flux.Reference(patcher.model.diffusion_model, leaves)

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
    for name, (ga, gb) in ours.items():
        ra, rb = leaves[name][0].grad, leaves[name][1].grad
        for got, want in ((ga, ra), (gb, rb)):
            assert want.abs().max() > 0
            rel = ((got - want).abs().max() / want.abs().max()).item()
            assert rel <= 1e-4, f"{name}: relative gradient error {rel:.2e}"
