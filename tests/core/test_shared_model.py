"""Training never changes the MODEL it was given: sampling is bit-identical before and after a run (also after an
Interrupt), and no adapter modules, attributes, weight functions or patches are left on the shared model."""
import pytest
import torch

import training_data
from model_snapshot import assert_clean as _assert_clean, sample as _sample, snapshot as _snapshot
from recording import RecordingHooks


def test_sampling_identical_after_training(comfy, core):
    model, examples = training_data.model_and_examples(comfy)
    _, clip, _ = training_data.load_models(comfy)
    first = _sample(model, clip)
    before = _snapshot(model)
    with torch.inference_mode():
        lora = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(steps=4, learning_rate=1e-2,
                                                                                 caption_dropout=0.0))
    assert any(v.abs().max() > 0 for k, v in lora.items() if k.endswith("lora_up.weight")), "training changed the LoRA"
    _assert_clean(before, _snapshot(model))
    assert torch.equal(_sample(model, clip), first)


def test_interrupt_leaves_model_clean(comfy, core):
    import comfy.model_management as mm
    model, examples = training_data.model_and_examples(comfy)
    _, clip, _ = training_data.load_models(comfy)
    first = _sample(model, clip)
    before = _snapshot(model)
    hooks = RecordingHooks(interrupt_at=2)
    with pytest.raises(mm.InterruptProcessingException), torch.inference_mode():
        core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(steps=50, learning_rate=1e-2,
                                                                               caption_dropout=0.0), hooks)
    assert hooks.steps == [1, 2]
    partial = hooks.partial
    assert len(partial) == 1 and partial[0].info.steps_done == 2 and partial[0].info.settings.steps == 50
    assert any(v.abs().max() > 0 for k, v in partial[0].items() if k.endswith("lora_up.weight"))
    _assert_clean(before, _snapshot(model))
    assert torch.equal(_sample(model, clip), first)


def test_non_flux_model_is_refused(core):
    import comfy.model_base
    import comfy.model_patcher
    flux_model = core.flux_model
    sdxl = comfy.model_base.SDXL.__new__(comfy.model_base.SDXL)
    torch.nn.Module.__init__(sdxl)
    patcher = comfy.model_patcher.ModelPatcher(sdxl, load_device="cpu", offload_device="cpu")
    with pytest.raises(flux_model.NotAFluxModel, match="Chroma LoRAs only.*SDXL"):
        flux_model.flux_info(patcher)


def test_cancel_from_the_progress_hook_keeps_finished_steps(comfy, core):
    """In the server, ComfyUI's progress hook itself raises on Cancel: the finished steps are still handed over."""
    import comfy.model_management as mm
    from comfy.utils import set_progress_bar_global_hook
    model, examples = training_data.model_and_examples(comfy)
    before = _snapshot(model)
    hooks = RecordingHooks()

    def hook(value, total, preview=None, node_id=None):
        if value == 3:
            raise mm.InterruptProcessingException()
    set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException), torch.inference_mode():
            core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(steps=20, caption_dropout=0.0), hooks)
    finally:
        set_progress_bar_global_hook(None)
    assert [p.info.steps_done for p in hooks.partial] == [3]
    _assert_clean(before, _snapshot(model))
