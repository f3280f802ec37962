"""Checkpoints and resume in ComfyUI's executor: a run cancelled through the real interrupt path and resumed gives the
same LoRA file, byte for byte, as the run that was never interrupted; resuming with other data or settings is refused;
checkpoint LoRA files appear in the LoRA list while training goes on."""
import pytest

import graphs
import harness
import images


def _graph(comfy, prefix, **settings):
    files = images.write_images(comfy["root"] / "input")
    # a busy configuration: batches of 2 (data order), caption and LoRA dropout (random streams), a schedule with warmup
    train = {**dict(steps=12, seed=21, batch_size=2, caption_dropout=0.3, lora_dropout=0.1, scheduler="cosine",
                    warmup_steps=2, save_every=0), **settings}
    return graphs.training_graph(comfy["names"], files, images.CAPTIONS, prefix=prefix, **train)


def _run_with_cancel_at(g, step):
    import comfy.model_management as mm
    from comfy.utils import set_progress_bar_global_hook

    def hook(value, total, preview=None, node_id=None):
        if total == 12 and value == step:
            raise mm.InterruptProcessingException()  # what ComfyUI's progress hook does when Cancel was pressed
    set_progress_bar_global_hook(hook)
    try:
        return harness.run(g)[0]
    finally:
        set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)


def _saved(comfy, executor, node="save"):
    name = executor.history_result["outputs"][node]["text"][0].split("\n")[0].removeprefix("Saved ")
    return (comfy["loras"] / name).read_bytes()


@pytest.mark.parametrize("ema", [{}, {"ema": True, "ema_decay": 0.8}], ids=["plain", "ema"])
def test_cancel_then_resume_gives_the_same_file_as_a_straight_run(comfy, ema):
    """(With ema on, the average continues from the saved one: resuming without it would give another file.)"""
    straight, _ = harness.run(_graph(comfy, "flux_lora/resume_check", **ema))
    assert straight.success, harness.error_message(straight)

    runs_before = set(comfy["runs"].glob("*"))
    cancelled = _run_with_cancel_at(_graph(comfy, "flux_lora/resume_check", **ema), 5)
    assert any(event == "execution_interrupted" for event, _ in cancelled.status_messages)
    (run,) = set(comfy["runs"].glob("*")) - runs_before
    assert sorted(p.name for p in run.iterdir()) == [f"{run.name}_step000005.safetensors", "training-state.fluxlora"]

    resumed, _ = harness.run(_graph(comfy, "flux_lora/resume_check", resume="latest", **ema))
    assert resumed.success, harness.error_message(resumed)
    assert len(resumed.history_result["outputs"]["train"]["loss"]) == 12  # the 5 losses before + the 7 after
    assert _saved(comfy, resumed) == _saved(comfy, straight)
    assert (run / f"{run.name}_step000012.safetensors").is_file()  # the resumed run went on in the same folder


def test_resume_with_other_data_or_settings_is_refused(comfy):
    runs_before = set(comfy["runs"].glob("*"))
    cancelled = _run_with_cancel_at(_graph(comfy, "flux_lora/refused"), 3)
    assert any(event == "execution_interrupted" for event, _ in cancelled.status_messages)
    (run,) = set(comfy["runs"].glob("*")) - runs_before
    other_rank, _ = harness.run(_graph(comfy, "flux_lora/refused", rank=8, resume=run.name))
    message = harness.error_message(other_rank)
    assert f"Cannot resume run '{run.name}'" in message and "rank: 16 then, 8 now" in message
    g = _graph(comfy, "flux_lora/refused", resume=run.name)
    g["images"]["inputs"]["captions"] = "another caption for all"
    other_data, _ = harness.run(g)
    assert "the dataset (its images, captions or crop) changed" in harness.error_message(other_data)
    with pytest.raises(AssertionError, match=f"Value not in list: resume: 'no_such_run' not in .*{run.name}"):
        harness.run(_graph(comfy, "flux_lora/refused", resume="no_such_run"))  # the list of runs is the widget's


def test_checkpoint_files_are_listed_while_training(comfy):
    """Every save_every steps a LoRA file appears in LoraLoader's list at once (checked from inside the run)."""
    import folder_paths
    from comfy.utils import set_progress_bar_global_hook
    before, listed = set(comfy["runs"].glob("*")), {}

    def hook(value, total, preview=None, node_id=None):
        if total == 12 and value in (4, 8):
            (run,) = set(comfy["runs"].glob("*")) - before
            name = f"fluxlora_runs/{run.name}/{run.name}_step{value:06d}.safetensors"
            listed[value] = name in folder_paths.get_filename_list("loras")
    set_progress_bar_global_hook(hook)
    try:
        executor, _ = harness.run(_graph(comfy, "flux_lora/periodic", seed=5, save_every=4))
    finally:
        set_progress_bar_global_hook(None)
    assert executor.success, harness.error_message(executor)
    assert listed == {4: True, 8: True}
    (run,) = set(comfy["runs"].glob("*")) - before
    assert sorted(p.name.rsplit("_", 1)[-1] for p in run.glob("*.safetensors")) == [
        "step000004.safetensors", "step000008.safetensors", "step000012.safetensors"]
