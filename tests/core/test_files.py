"""Files are written whole or not at all: a full disk never leaves a truncated LoRA, checkpoint or cache entry under
its real name; a Cancel whose save fails still cancels; a cache that cannot be written or holds something else does not
stop training."""
import errno
import logging
import os

import pytest
import torch

import graphs
import harness
import images
import training_data
from recording import RecordingHooks


class DiskFull:
    """A file object that writes the first half of what it is given, then fails like a full disk."""

    def __init__(self, fd):
        self.f = os.fdopen(fd, "wb")

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_a_full_disk_leaves_no_partial_lora(core, tmp_path, monkeypatch):
    monkeypatch.setattr(core.files, "_open_for_write", DiskFull)
    with pytest.raises(OSError, match="No space left"):
        core.export.write_new_file(str(tmp_path), "flux/my_lora", 7, b"x" * 1000)
    assert _leftovers(tmp_path) == []  # neither the file nor its temporary


def test_cancel_still_cancels_when_the_checkpoint_cannot_be_written(comfy, core, tmp_path, monkeypatch, caplog):
    import comfy.model_management as mm
    model, examples = training_data.model_and_examples(comfy)
    run = core.loop.RunFolder(core.checkpoint.new_run_folder(str(tmp_path), "full_disk"), {"dataset": "", "model": "",
                                                                                          "settings": {}})
    monkeypatch.setattr(core.files, "_open_for_write", DiskFull)
    hooks = RecordingHooks(interrupt_at=2)
    with caplog.at_level(logging.ERROR), pytest.raises(mm.InterruptProcessingException), torch.inference_mode():
        core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(steps=10, caption_dropout=0.0), hooks,
                                  run=run)
    mm.interrupt_current_processing(False)
    assert len(hooks.partial) == 1 and hooks.partial[0].info.steps_done == 2  # the work so far still reaches the node
    assert any("could not save the checkpoint at step 2" in r.getMessage() for r in caplog.records)
    assert _leftovers(run.path) == []


def test_training_goes_on_when_the_cache_cannot_be_written(comfy, core, tmp_path, caplog):
    model, clip, vae = training_data.load_models(comfy)
    blocked = tmp_path / "cache_is_a_file"
    blocked.write_text("not a folder")  # every cache write fails
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        out = core.run.train_run(model, clip, vae, training_data.dataset(comfy),
                                 core.settings.TrainSettings(steps=2, caption_dropout=0.0), cache_root=str(blocked))
    assert len(out.lora.losses) == 2 and out.images_encoded == 4
    assert any("cannot write the encoding cache" in r.getMessage() for r in caplog.records)


def test_cache_entries_with_wrong_contents_are_recomputed(comfy, core, tmp_path, caplog):
    """Valid safetensors files holding the wrong tensors (a KeyError or shape mismatch before) are recomputed."""
    from safetensors.torch import save_file
    model, clip, vae = training_data.load_models(comfy)
    settings = core.settings.TrainSettings(steps=1, caption_dropout=0.0)
    with torch.inference_mode():
        first = core.run.train_run(model, clip, vae, training_data.dataset(comfy), settings, cache_root=str(tmp_path))
    entries = sorted(tmp_path.rglob("*.safetensors"))
    assert first.images_encoded == 4 and len(entries) == 8
    for i, entry in enumerate(entries):  # wrong key, wrong shape, NaN values
        save_file([{"other": torch.zeros(3)}, {"latent": torch.zeros(16, 2, 2)}, {"latent": torch.full((16, 8, 8), float("nan"))},
                   {"context": torch.zeros(5), "pooled": torch.zeros(32)}][i % 4], str(entry))
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        again = core.run.train_run(model, clip, vae, training_data.dataset(comfy), settings, cache_root=str(tmp_path))
    assert again.images_encoded == 4 and again.captions_encoded == 4 and again.lora.losses == first.lora.losses


class RecordingWarnings(RecordingHooks):
    def __init__(self):
        super().__init__()
        self.warnings, self.saved = [], []

    def on_warning(self, text):
        self.warnings.append(text)

    def on_saved(self, step, path):
        self.saved.append(step)


def _full_disk_in(core, monkeypatch, part: str, writes=None):
    """Every write into a folder whose path contains ``part`` fails like a full disk (``writes``: only those
    numbers of such writes, counted from 1); elsewhere writing works."""
    real, count = core.files._write_temp, [0]

    def write_temp(folder, data):
        if part in folder:
            count[0] += 1
            if writes is None or count[0] in writes:
                with monkeypatch.context() as m:
                    m.setattr(core.files, "_open_for_write", DiskFull)
                    return real(folder, data)
        return real(folder, data)
    monkeypatch.setattr(core.files, "_write_temp", write_temp)


def test_a_checkpoint_that_cannot_be_written_is_skipped_and_training_goes_on(comfy, core, tmp_path, monkeypatch,
                                                                             caplog):
    """A full disk during a periodic checkpoint stopped training with 'No space left on device' and lost the LoRA in
    memory, although the checkpoint was optional: it is skipped with a warning (log and node), without leftovers."""
    model, examples = training_data.model_and_examples(comfy)
    run = core.loop.RunFolder(core.checkpoint.new_run_folder(str(tmp_path), "full_disk"), {"dataset": "", "model": "",
                                                                                          "settings": {}})
    _full_disk_in(core, monkeypatch, "full_disk", writes={3})   # step 2's LoRA file: 1-2 are step 1's LoRA and state
    hooks = RecordingWarnings()
    with caplog.at_level(logging.WARNING), torch.inference_mode():
        lora = core.loop.train_flux_lora(model, examples, core.settings.TrainSettings(
            steps=4, save_every=1, caption_dropout=0.0), hooks, run=run)
    assert lora.info.steps_done == 4 and len(lora.losses) == 4
    assert hooks.saved == [1, 3, 4] and len(hooks.warnings) == 1
    assert "the checkpoint of step 2 could not be written" in hooks.warnings[0]
    assert "No space left on device" in hooks.warnings[0] and "training goes on" in hooks.warnings[0]
    assert any(r.getMessage() == hooks.warnings[0] for r in caplog.records)
    assert _leftovers(run.path) == sorted([f"{run.path.name}_step{s:06d}.safetensors" for s in (1, 3, 4)]
                                          + [core.checkpoint.STATE_FILE])   # no temporary file left


def test_a_run_folder_without_room_still_outputs_the_lora_for_save_flux_lora(comfy, core, monkeypatch):
    """When even the run folder's last save fails, the node warns and still outputs the trained LoRA: Save Flux LoRA
    writes it where there is room, or fails with its own message saying what to do."""
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=4, prefix="flux_lora/no_room_in_runs",
                              save_every=2)
    _full_disk_in(core, monkeypatch, core.checkpoint.RUNS_FOLDER)
    executor, _ = harness.run(g)
    assert executor.success, harness.error_message(executor)
    outputs = executor.history_result["outputs"]
    warnings = outputs["train"]["warnings"]
    assert len(warnings) == 2 and "the checkpoint of step 2 could not be written" in warnings[0]
    assert "the LoRA of step 4 could not be written into its run folder" in warnings[1]
    assert "It is still this node's output: save it with Save Flux LoRA" in warnings[1]
    assert outputs["train"]["saved"] == []
    assert [p.name for p in comfy["loras"].rglob("no_room_in_runs_*")] == ["no_room_in_runs_000004steps_00001.safetensors"]

    _full_disk_in(core, monkeypatch, "")   # now the loras folder is full too
    g["save"]["inputs"]["filename_prefix"] = "flux_lora/no_room_at_all"
    g["train"]["inputs"]["seed"] = 1   # train again (not from ComfyUI's cache)
    executor, _ = harness.run(g)
    assert not executor.success
    message = harness.error_message(executor)
    assert "could not be written into" in message and "No space left on device" in message, message
    assert "nothing was saved. Free disk space there" in message and "queue again" in message
    assert not list(comfy["loras"].rglob("no_room_at_all_*")) and not list(comfy["loras"].rglob(".fluxlora-*"))
