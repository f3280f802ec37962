"""Where bitsandbytes does not import (no wheel for the platform, or a broken CUDA set-up), the settings that need it
are refused before anything is encoded, with what to choose instead, and base_weights 'auto' never picks NF4."""
import sys

import pytest
import torch

import training_data


@pytest.fixture
def no_bitsandbytes(core, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)   # import bitsandbytes -> ImportError
    core.optional_packages.bitsandbytes_error.cache_clear()
    yield
    core.optional_packages.bitsandbytes_error.cache_clear()


@pytest.mark.parametrize("setting,named", [({"base_weights": "nf4"}, "base_weights 'nf4'"),
                                           ({"optimizer": "adamw8bit"}, "optimizer 'adamw8bit'")])
def test_settings_needing_bitsandbytes_are_refused_before_encoding(comfy, core, monkeypatch, no_bitsandbytes,
                                                                   setting, named):
    model, clip, vae = training_data.load_models(comfy)
    monkeypatch.setattr(core.examples.Encoder, "examples", lambda *a, **k: pytest.fail("encoded before the check"))
    settings = core.settings.TrainSettings(steps=2, rank=4, caption_dropout=0.0, **setting)
    with pytest.raises(ValueError, match=f"{named} needs the bitsandbytes package.*pip install bitsandbytes"):
        with torch.inference_mode():
            core.run.train_run(model, clip, vae, training_data.dataset(comfy), settings)


def test_bitsandbytes_present_is_found_and_imported_only_when_needed(core, monkeypatch):
    core.optional_packages.bitsandbytes_error.cache_clear()
    assert core.optional_packages.bitsandbytes_error() == ""   # the test environment has it
    core.optional_packages.bitsandbytes_error.cache_clear()
    monkeypatch.setattr(core.optional_packages, "bitsandbytes_error", lambda: pytest.fail("imported needlessly"))
    settings = core.settings.TrainSettings(base_weights="fp8")
    assert core.memory_plan._bitsandbytes_checked(settings, "fp8") is True


def test_auto_does_not_pick_nf4_without_bitsandbytes(core):
    """The 12 GB tier picks NF4 for FLUX.1-dev at 1024 px; without bitsandbytes it streams fp8 weights instead."""
    import full_size
    facts = full_size.flux_dev_facts(core.memory_plan)

    def plan(nf4_available):
        return core.memory_plan.make_plan(facts, tier="12 GB", base_weights="auto", gpu_weights_gb=0.0,
                                          image_tokens=4096, batch=1, checkpointing=True, trainable_params=18_677_760,
                                          available=80 * 2 ** 30, free_ram=64 * 2 ** 30, on_gpu=True,
                                          nf4_available=nf4_available)
    assert plan(True).base_weights == "nf4"
    without = plan(False)
    assert without.base_weights == "fp8" and without.offloaded, without.describe()
