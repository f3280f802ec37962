"""Optimizers: the fused AdamW the trainer uses on GPUs makes the same updates as the default one (checked on the CPU,
where PyTorch has the fused kernel too)."""
import torch


def _train(core, fused, steps=20):
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(16, 8, generator=g)), torch.nn.Parameter(torch.randn(8, generator=g))]
    opt = core.optim.make_optimizer("adamw", params, 1e-2, fused=fused)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return params, opt


def test_fused_adamw_matches_the_default(core):
    fused, fused_opt = _train(core, True)
    plain, plain_opt = _train(core, False)
    assert fused_opt.param_groups[0]["fused"] and not plain_opt.param_groups[0]["fused"]
    moved = max((p - torch.randn(p.shape, generator=torch.Generator().manual_seed(0))).abs().max() for p in plain)
    assert moved > 0.05  # the updates are not negligible...
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # ...and the same
