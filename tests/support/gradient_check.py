"""Shared steps of the LoRA gradient tests: random adapters, one training step's gradients, the same step through the
independent reference forward (tests/support/reference_flux.py), and the comparison."""
import torch

import reference_flux


def randomize(lora, seed=3):
    """B starts at zero (A would get no gradient): make both non-trivial."""
    g = torch.Generator().manual_seed(seed)
    for p in lora.parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def trainer_gradients(lora, scale):
    """(the trainer's {layer: (grad A, grad B)}, {layer: (A, B, scale)} leaves for the reference)."""
    ours = {n: (l.lora_A["default"].weight.grad.clone(), l.lora_B["default"].weight.grad.clone())
            for n, l in lora.layers.items()}
    leaves = {n: (l.lora_A["default"].weight.detach().clone().requires_grad_(True),
                  l.lora_B["default"].weight.detach().clone().requires_grad_(True), scale)
              for n, l in lora.layers.items()}
    return ours, leaves


def reference_loss(objective, diffusion_model, leaves, examples, weights=None, with_references=False):
    """The loss ``batch_loss`` computes for examples 0 and 1 with a generator seeded 7, through the reference forward."""
    reference = reference_flux.Reference(diffusion_model, leaves, weights)
    gen = torch.Generator().manual_seed(7)
    x0 = torch.stack([examples[0].latent, examples[1].latent])
    noise = torch.randn(x0.shape, generator=gen)
    sigmas = objective.sample_sigmas("sigmoid", 2, gen, image_tokens=(x0.shape[-2] // 2) * (x0.shape[-1] // 2))
    refs = torch.stack([examples[0].references[0], examples[1].references[0]]) if with_references else None
    pred = reference(objective.noisy_latents(x0, noise, sigmas), sigmas, torch.stack([e.context for e in examples[:2]]),
                     torch.stack([e.pooled for e in examples[:2]]), torch.full((2,), 1.0), reference=refs)
    return ((pred - (noise - x0)) ** 2).reshape(2, -1).mean(1).mean()


def assert_gradients_match(ours, leaves, rtol=1e-4):
    for name, (ga, gb) in ours.items():
        for got, want in ((ga, leaves[name][0].grad), (gb, leaves[name][1].grad)):
            assert want.abs().max() > 0
            rel = ((got - want).abs().max() / want.abs().max()).item()
            assert rel <= rtol, f"{name}: relative gradient error {rel:.2e}"
