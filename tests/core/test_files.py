"""Files are written whole or not at all: a full disk never leaves a truncated LoRA, checkpoint or cache entry under
its real name; a Cancel whose save fails still cancels; a cache that cannot be written or holds something else does not
stop training."""
import errno
import logging
import os

import pytest
import torch

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
