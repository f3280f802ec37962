"""Slider LoRAs on the tiny FLUX: trained from three prompts, the LoRA loaded with ComfyUI's own LoRA loading moves the
base model's prediction for the target prompt along (positive - negative) at strength +1 and against it at -1, and
changes nothing at 0; the training forward at multiplier m is the stock patch at strength m; the objective is
ai-toolkit's; settings a slider cannot use are refused before anything is encoded."""
import pytest
import torch

import training_data

PROMPTS = ("a photo of a thing", "a photo of a big red thing", "a photo of a small blue thing")


def _slider_run(comfy, core, tmp_path, **settings):
    model, clip, vae = training_data.load_models(comfy)
    spec = core.slider.SliderSpec(*PROMPTS)
    values = {**dict(steps=30, learning_rate=1e-2, rank=4, seed=0, caption_dropout=0.0), **settings}
    with torch.inference_mode():
        out = core.run.train_run(model, clip, vae, training_data.dataset(comfy), core.settings.TrainSettings(**values),
                                 cache_root=str(tmp_path / "cache"), slider=spec)
    return model, clip, vae, out


def _inputs(core, model, clip, vae):
    """The three prompts encoded, and fixed noisy latents with their noise levels."""
    encoder = core.examples.Encoder(model, clip, vae)
    with torch.inference_mode():
        texts = [encoder.text(p) for p in PROMPTS]
    x = torch.randn(4, 16, 16, 16, generator=torch.Generator().manual_seed(5))
    return texts, x, torch.tensor([0.2, 0.4, 0.6, 0.8])


def _predict(core, patcher, text, x, sigmas, load=True):
    import comfy.model_management as mm
    if load:
        mm.load_models_gpu([patcher])
    with torch.inference_mode():
        return core.predict.predict_velocity(patcher, x, sigmas, text[0][None].expand(4, -1, -1),
                                             text[1][None].expand(4, -1), 1.0)


def test_the_slider_moves_the_target_along_positive_minus_negative(comfy, core, tmp_path):
    from comfy.sd import load_lora_for_models
    model, clip, vae, out = _slider_run(comfy, core, tmp_path)
    texts, x, sigmas = _inputs(core, model, clip, vae)
    neutral, positive, negative = (_predict(core, model, t, x, sigmas) for t in texts)
    direction = (positive - negative).flatten()
    along, got = {}, {}
    for strength in (-1.0, 0.0, 1.0):
        patched = load_lora_for_models(model, None, dict(out.lora), strength, 0)[0]
        got[strength] = _predict(core, patched, texts[0], x, sigmas)
        along[strength] = float(torch.dot((got[strength] - neutral).flatten(), direction) / direction.norm())
    assert along[1.0] > 0 > along[-1.0], along
    assert torch.equal(got[0.0], neutral)   # strength 0: the base model, exactly
    assert out.lora.info.slider == core.slider.SliderSpec(*PROMPTS).as_dict()
    meta = core.export.metadata(out.lora.info, "kohya", "bf16")
    assert '"positive": "a photo of a big red thing"' in meta["fluxlora_slider"]


def test_the_training_multiplier_is_the_stock_strength(comfy, core):
    """What the slider loss trains at multiplier -1 is what LoraLoader gives at strength_model -1."""
    from comfy.sd import load_lora_for_models
    model, clip, vae = training_data.load_models(comfy)
    _, examples = training_data.model_and_examples(comfy)
    texts, x, sigmas = _inputs(core, model, clip, vae)
    settings = core.settings.TrainSettings(steps=1, rank=4, caption_dropout=0.0)
    g = torch.Generator().manual_seed(3)
    with torch.inference_mode(False), core.loop.training_patcher(model, examples, settings) as (patcher, lora, _):
        lora.load_trainable_state({n: torch.randn(p.shape, generator=g) * 0.2 for n, p in lora.named_parameters()})
        trained = lora.comfy_state_dict()
        with lora.multiplier(-1.0):
            training = _predict(core, patcher, texts[0], x, sigmas, load=False)
        plus = _predict(core, patcher, texts[0], x, sigmas, load=False)   # the strength is back afterwards
    for strength, want in ((-1.0, training), (1.0, plus)):
        stock = load_lora_for_models(model, None, trained, strength, 0)[0]
        torch.testing.assert_close(want, _predict(core, stock, texts[0], x, sigmas), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(training, plus, atol=1e-4)


def test_the_goal_is_ai_toolkits(core):
    """neutral + m * g * (positive - negative), rescaled to the neutral prediction's mean and std."""
    g = torch.Generator().manual_seed(0)
    neutral, positive, negative = (torch.randn(2, 16, 4, 4, generator=g) for _ in range(3))
    goals = core.slider.slider_goals(neutral, positive, negative, 3.0)
    raw = neutral - 3.0 * (positive - negative)
    manual = (raw - raw.mean()) / (raw.std() + 1e-8) * neutral.std() + neutral.mean()
    torch.testing.assert_close(goals[-1.0], manual)
    torch.testing.assert_close(goals[1.0].std(), neutral.std())


@pytest.mark.parametrize("change, message", [
    ({"caption_dropout": 0.05}, "caption_dropout 0.05"),
    ({"validation_images": 1}, "validation_images 1"),
    ({"use_dora": True}, "use_dora True"),
    ({"init": "pissa"}, "init 'pissa'"),
])
def test_settings_a_slider_cannot_use_are_refused_before_encoding(comfy, core, tmp_path, monkeypatch, change, message):
    monkeypatch.setattr(core.examples.Encoder, "examples", lambda *a, **k: pytest.fail("encoded before the check"))
    with pytest.raises(ValueError, match=f"Slider training does not use these settings: {message}"):
        _slider_run(comfy, core, tmp_path, **{"caption_dropout": 0.0, **change})


def test_a_slider_without_a_direction_is_refused(comfy, core, tmp_path, monkeypatch):
    monkeypatch.setattr(core.examples.Encoder, "examples", lambda *a, **k: pytest.fail("encoded before the check"))
    model, clip, vae = training_data.load_models(comfy)
    for spec, message in ((core.slider.SliderSpec("a thing", "a red thing", "a red thing"), "the same"),
                          (core.slider.SliderSpec("a thing", "", "a blue thing"), "positive is empty")):
        with pytest.raises(ValueError, match=message), torch.inference_mode():
            core.run.train_run(model, clip, vae, training_data.dataset(comfy),
                               core.settings.TrainSettings(steps=2, caption_dropout=0.0), slider=spec)
