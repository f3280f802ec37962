"""EMA of the LoRA weights: the LoRA a run gives is the warmed-up exponential average of the weights after each step,
computed here by hand from the trained weights the run went through; training itself is unchanged; the file says
whether it holds the average; the memory plan counts it."""
import json

import pytest
import torch

import training_data


def _recording(core, monkeypatch):
    """Records the adapter the run builds and the trained weights the EMA starts from and sees after each step."""
    seen = {"weights": []}
    lora_class, ema_class = core.loop.FluxLoRA, core.loop.AdapterEMA

    def capture_lora(*args, **kwargs):
        seen["lora"] = lora_class(*args, **kwargs)
        return seen["lora"]

    class RecordingEMA(ema_class):
        def __init__(self, params, decay):
            super().__init__(params, decay)
            seen["start"] = [p.detach().clone() for p in self.params]

        def update(self):
            seen["weights"].append([p.detach().clone() for p in self.params])
            super().update()
    monkeypatch.setattr(core.loop, "FluxLoRA", capture_lora)
    monkeypatch.setattr(core.loop, "AdapterEMA", RecordingEMA)
    return seen


def test_the_ema_lora_is_the_warmed_up_average_of_the_trained_weights(comfy, core, monkeypatch):
    model, examples = training_data.model_and_examples(comfy)
    base = dict(steps=12, learning_rate=1e-2, rank=4, seed=3, caption_dropout=0.0)
    with torch.inference_mode():
        plain = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(**base))
    seen = _recording(core, monkeypatch)
    with torch.inference_mode():
        averaged = core.loop.train_flux_lora(model, examples,
                                             core.settings.TrainSettings(**base, ema=True, ema_decay=0.5))
    assert averaged.losses == plain.losses   # the EMA does not change training
    assert len(seen["weights"]) == 12
    expected = [t.double() for t in seen["start"]]
    for n, weights in enumerate(seen["weights"]):
        decay = min(0.5, (1 + n) / (10 + n))   # diffusers' warm-up: 0.1, 0.18, ... then 0.5 from the 9th update on
        expected = [decay * e + (1 - decay) * w.double() for e, w in zip(expected, weights)]
    lora = seen["lora"]
    with torch.inference_mode(False):
        lora.load_trainable_state({name: e.float() for (name, _), e in zip(lora.named_parameters(), expected)})
        want = lora.comfy_state_dict()
        lora.load_trainable_state({name: w for (name, _), w in zip(lora.named_parameters(), seen["weights"][-1])})
        last = lora.comfy_state_dict()
    assert set(averaged) == set(want) == set(plain)
    for key in want:
        torch.testing.assert_close(averaged[key], want[key], rtol=1e-5, atol=1e-7, msg=key)
        torch.testing.assert_close(plain[key], last[key], rtol=0, atol=0, msg=key)   # without EMA: the last weights
    assert max((averaged[k] - plain[k]).abs().max() for k in want if k.endswith("lora_up.weight")) > 1e-4
    assert json.loads(core.export.metadata(averaged.info, "kohya", "bf16")["fluxlora_ema"]) == {"decay": 0.5}
    assert core.export.metadata(plain.info, "kohya", "bf16")["fluxlora_ema"] == "false"


def test_validation_and_checkpoint_samples_use_the_ema_weights(comfy, core, monkeypatch):
    """With ema on, what is validated and what a checkpoint hook gets is the average (the LoRA the run gives), and the
    trained weights are back in the adapter afterwards (the next step trains on from them)."""
    model, examples = training_data.model_and_examples(comfy)
    settings = core.settings.TrainSettings(steps=4, learning_rate=1e-2, rank=4, seed=3, caption_dropout=0.0, ema=True,
                                           ema_decay=0.9, validation_images=1, validation_every=2)
    validation = core.validation.ValidationSet.build(examples[:1], settings.seed)

    class Hooks(core.loop.TrainingHooks):
        checkpoint_every = 2
        given = []

        def on_checkpoint(self, step, weights):
            self.given.append(weights)

    with torch.inference_mode():
        result = core.loop.train_flux_lora(model, examples[1:], settings, Hooks(), validation=validation)
    # the last checkpoint's weights are the run's output (the EMA), not the trained weights of step 4
    assert all(torch.equal(Hooks.given[-1][k], result[k]) for k in result)
    off = settings.with_changes(ema=False)
    with torch.inference_mode():
        trained = core.loop.train_flux_lora(model, examples[1:], off, validation=validation)
    assert trained.losses == result.losses   # the trained weights went on unchanged by the EMA swaps
    assert result.info.validation != trained.info.validation   # validated: the average, not the trained weights
    assert result.info.ema and not trained.info.ema


def test_the_memory_plan_counts_the_ema(core):
    facts = core.memory_plan.ModelFacts(linear_params=10 ** 9, other_bytes=0, loaded_format="bf16", hidden=3072,
                                        blocks=57, largest_linear=10 ** 7)
    args = dict(image_tokens=4096, batch=1, checkpointing=True, trainable_params=10 ** 8)
    without = core.memory_plan.other_bytes(facts, "as loaded", **args)
    with_ema = core.memory_plan.other_bytes(facts, "as loaded", **args, ema=True)
    assert with_ema - without == 10 ** 8 * core.memory_plan.EMA_BYTES


def test_a_run_saved_before_ema_existed_resumes_without_it(core):
    """A training state written before a setting existed trained with that setting's default."""
    settings = core.settings.TrainSettings(steps=10).as_dict()
    old = {k: v for k, v in settings.items() if k not in ("ema", "ema_decay")}
    identity = {"dataset": "d", "model": "m", "settings": settings, "base_weights": "as loaded"}
    saved = {"run": "r", "step": 5, "identity": dict(identity, settings=old)}
    defaults = core.settings.TrainSettings().as_dict()
    resumable = core.settings.resumable_names()
    core.checkpoint.check_resumable(saved, identity, settings, resumable, defaults)
    with pytest.raises(ValueError, match="ema: False then, True now"):
        core.checkpoint.check_resumable(saved, identity, dict(settings, ema=True), resumable, defaults)
