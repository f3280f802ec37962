"""Windows' CUDA sysmem fallback: a run near the card's size is told how to switch it off (node and log), and a
several-fold, lasting slowdown after the first steps is logged as probable spilling."""
import logging
from types import SimpleNamespace

import pytest
import torch

import training_data


def _plan(peak_gib, budget_gib):
    gib = 2 ** 30
    return SimpleNamespace(peak=int(peak_gib * gib), budget=int(budget_gib * gib))


def test_advice_only_on_windows_cuda_near_the_cards_size(core):
    advice = core.sysmem.fallback_advice
    assert "Prefer No Sysmem Fallback" in advice(_plan(15.0, 16.0), "cuda:0", "Windows")     # within 10%
    assert "python.exe" in advice(_plan(17.0, 16.0), "cuda:0", "Windows")                  # above the card
    assert advice(_plan(12.0, 16.0), "cuda:0", "Windows") == ""                              # room to spare
    assert advice(_plan(15.9, 16.0), "cuda:0", "Linux") == ""                                # Linux never spills
    assert advice(_plan(15.9, 16.0), "cpu", "Windows") == ""


def test_spill_watch_names_a_lasting_several_fold_slowdown_once(core):
    watch = core.sysmem.SpillWatch()
    said = [watch.step(t) for t in [3.0, 1.2] + [1.0] * 8 + [6.0, 1.0, 6.0, 6.0]]
    assert not any(said)                                   # one slow step, then a recovery: not spilling
    warning = watch.step(6.5)                              # the third slow step in a row
    assert "6.5 s, 6x the 1.00 s of the first steps" in warning and "spills into system RAM" in warning
    assert [watch.step(7.0) for _ in range(5)] == [""] * 5  # said once


def test_training_hooks_time_steps_but_not_sampling_or_validation(core, monkeypatch, caplog):
    run = core.run
    monkeypatch.setattr(run, "spills_silently", lambda device: True)
    clock = iter([float(t) for t in range(11)]           # 10 settled steps of 1 s
                 + [100.0, 105.0, 110.0, 115.0])            # a validation ran before 100: then 5 s steps
    monkeypatch.setattr(run.time, "perf_counter", lambda: next(clock))
    hooks = run._CheckpointSamples(run.RunHooks(), SimpleNamespace(load_device="cuda:0"), None, None)

    def spills():
        return [r.message for r in caplog.records if "spills into system RAM" in r.message]
    with caplog.at_level(logging.WARNING):
        for step in range(1, 12):
            hooks.on_step(step, 20, 1.0, 1e-4)
        hooks.on_validation(11, 1.0)
        for step in range(12, 15):
            hooks.on_step(step, 20, 1.0, 1e-4)
        assert spills() == []          # the 90 s interval holding the validation was not counted as a slow step
        hooks.on_step(15, 20, 1.0, 1e-4)
    assert len(spills()) == 1 and "5.0 s, 5x" in spills()[0], spills()


def test_the_advice_reaches_the_node_with_the_plan(comfy, core, monkeypatch):
    monkeypatch.setattr(core.run, "fallback_advice", lambda plan, device: "SWITCH-IT-OFF")

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop
    monkeypatch.setattr(core.examples.Encoder, "examples", stop)
    seen = []

    class Hooks(core.run.RunHooks):
        def on_plan(self, text):
            seen.append(text)
    model, clip, vae = training_data.load_models(comfy)
    with pytest.raises(Stop), torch.inference_mode():
        core.run.train_run(model, clip, vae, training_data.dataset(comfy),
                           core.settings.TrainSettings(steps=2, rank=4, caption_dropout=0.0), hooks=Hooks())
    assert len(seen) == 1 and seen[0].startswith("VRAM plan") and seen[0].endswith("SWITCH-IT-OFF")
