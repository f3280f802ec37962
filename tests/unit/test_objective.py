"""The rectified-flow objective: how noise levels are drawn (shifts), noisy latents, target, loss weights."""
import math

import pytest
import torch


def test_sigma_sampling_shifts(core):
    objective = core.objective
    draw = lambda method, **kw: objective.sample_sigmas(method, 4096, torch.Generator().manual_seed(0), **kw)
    base = draw("sigmoid")
    s = 3.1582
    torch.testing.assert_close(draw("shift", shift=s), s * base / (1 + (s - 1) * base))
    # flux_shift at 1024x1024 (4096 packed tokens) is FLUX's own shift exp(1.15) ~ 3.158; smaller images shift less
    torch.testing.assert_close(draw("flux_shift", image_tokens=4096), draw("shift", shift=math.exp(1.15)))
    assert draw("flux_shift", image_tokens=1024).mean() < draw("flux_shift", image_tokens=4096).mean()
    assert base.mean() < draw("shift", shift=s).mean()
    assert base.mean() == pytest.approx(0.5, abs=0.02)
    assert 0 < draw("uniform").min() and draw("uniform").max() < 1
    with pytest.raises(ValueError, match="Unknown sigma sampling"):
        draw("logit_normal")  # removed: it was sigmoid under another name


def test_noisy_latents_target_and_weights(core):
    objective = core.objective
    x0, noise = torch.full((2, 1, 2, 2), 2.0), torch.full((2, 1, 2, 2), -1.0)
    sigmas = torch.tensor([0.0, 0.25])
    xt = objective.noisy_latents(x0, noise, sigmas)
    assert xt[0].unique().tolist() == [2.0] and xt[1].unique().tolist() == [0.75 * 2 - 0.25]
    assert objective.velocity_target(x0, noise).unique().tolist() == [-3.0]
    assert objective.loss_weights("none", sigmas).tolist() == [1.0, 1.0]
    assert objective.loss_weights("sigma_sqrt", torch.tensor([0.5])).item() == pytest.approx(4.0)
    loss = objective.flow_matching_loss(torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2), torch.tensor([1.0, 3.0]))
    assert loss.item() == pytest.approx(2.0)
