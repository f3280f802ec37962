"""DatasetLoader and TriggerWord on a realistic folder: real photos, bad files, missing captions."""
import importlib

import pytest
import torch

import photo_folder


@pytest.fixture(scope="module")
def folder(comfy):
    return photo_folder.write_photo_folder(comfy["root"] / "input" / "photos")


def _dataset_mod(pack):
    return importlib.import_module(f"{pack.__name__}.trainer.dataset")


def test_square_crop_report(comfy, pack, folder):
    ds_mod = _dataset_mod(pack)
    ds = ds_mod.load_folder("photos", str(comfy["root"] / "input"), resolution=512)  # relative to ComfyUI's input
    assert [im.name for im in ds.images] == ["astronaut.png", "chelsea.jpg", "coffee.webp", "rocket.png"]
    assert all(im.bucket == (512, 512) and im.pixels.dtype == torch.uint8 for im in ds.images)
    assert [im.caption_source for im in ds.images] == ["file", "file", "none", "file"]
    problems = "\n".join(ds.problems)
    for expected in ("astronaut_copy.png: duplicate of astronaut.png", "corrupt.jpg: corrupt or truncated",
                     "empty.png: empty file", "notes.jpg: not a readable image", "tiny.png: 100x100 is smaller than 512px - skipped",
                     "coffee.webp: no caption"):
        assert expected in problems, problems
    assert any("only 4 images" in w for w in ds.warnings) and any("resolution 512" in w for w in ds.warnings)
    assert any("readme.md" in n for n in ds.notes)
    text = ds_mod.report(ds)
    assert "4 images" in text and "3 captioned, 1 without caption" in text and "problem: corrupt.jpg" in text
    rocket = ds.images[3].pixels
    assert rocket[256, 262].tolist() == [255, 255, 255]  # transparent band flattened onto white
    grid = ds_mod.preview_grid(ds)
    assert grid.shape[0] == 1 and grid.shape[-1] == 3 and grid.dtype == torch.float32


def test_aspect_buckets_exif_and_small_images(comfy, pack, folder):
    ds_mod = _dataset_mod(pack)
    ds = ds_mod.load_folder(str(folder), "/nonexistent", resolution=512, crop="aspect buckets", small_images="include")
    buckets = {im.name: im.bucket for im in ds.images}
    assert buckets["chelsea.jpg"][1] > buckets["chelsea.jpg"][0]  # EXIF rotation applied: portrait
    assert buckets["coffee.webp"][0] > buckets["coffee.webp"][1]
    for name, (w, h) in buckets.items():
        assert w % 64 == 0 and h % 64 == 0
    assert buckets["tiny.png"] == (64, 64)  # included, never upscaled in bucket mode
    assert buckets["astronaut.png"] == (512, 512)
    assert any("tiny.png: 100x100 is smaller than 512px - included" in p for p in ds.problems)


def test_bucket_sizes_never_upscale(pack):
    ds_mod = _dataset_mod(pack)
    assert ds_mod.bucket_size(1200, 800, 1024) == (1152, 768)
    assert ds_mod.bucket_size(3000, 2000, 1024) == (1216, 832)
    assert ds_mod.bucket_size(300, 200, 1024) == (256, 192)


def test_missing_or_empty_folder_is_a_clear_error(comfy, pack, tmp_path):
    ds_mod = _dataset_mod(pack)
    (comfy["root"] / "input" / "photos_elsewhere").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=r"'no_such_folder' does not exist.*looked up in .*input.*photos_elsewhere"):
        ds_mod.load_folder("no_such_folder", [str(comfy["root"] / "input")])
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no usable images in .*only_text"):
        ds_mod.load_folder(str(tmp_path / "only_text"), str(tmp_path))


def test_trigger_word_rules(pack):
    trig = importlib.import_module(f"{pack.__name__}.trainer.trigger")
    assert trig.apply_trigger("a cat", "ohwx_cat") == "ohwx_cat, a cat"
    assert trig.apply_trigger("", "ohwx_cat") == "ohwx_cat"
    assert trig.apply_trigger("ohwx_cat, a cat", "ohwx_cat") == "ohwx_cat, a cat"  # never twice
    assert trig.apply_trigger("a photo of [trigger] on grass", "ohwx_cat", "replace [trigger]") == "a photo of ohwx_cat on grass"
    assert trig.apply_trigger("[trigger], a [trigger] cat", "ohwx_cat", "replace [trigger]") == "ohwx_cat, a cat"
    assert trig.apply_trigger("a cat", "ohwx_cat", "replace [trigger]") == "ohwx_cat, a cat"
    assert trig.apply_trigger("ohwx_catalog photo", "ohwx_cat") == "ohwx_cat, ohwx_catalog photo"  # whole words only
    clip_tokens, t5_tokens = trig.token_split("mytoken_artstyle")
    assert len(clip_tokens) > 1 and len(t5_tokens) > 1
    assert any("single token" in w for w in trig.trigger_warnings("dog"))
    assert not trig.trigger_warnings("mytoken_artstyle")


def test_caption_dropout_in_batches(pack):
    ex = importlib.import_module(f"{pack.__name__}.trainer.examples")
    examples = [ex.Example(torch.zeros(16, 4, 4), torch.full((3, 8), float(i + 1)), torch.full((8,), float(i + 1)), f"c{i}")
                for i in range(4)]
    empty = (torch.zeros(3, 8), torch.zeros(8))
    _, ctx, pooled = ex.collate(examples, empty, 0.0, torch.Generator().manual_seed(0))
    assert ctx[:, 0, 0].tolist() == [1, 2, 3, 4]
    _, ctx, pooled = ex.collate(examples, empty, 0.999, torch.Generator().manual_seed(0))
    assert ctx.abs().sum() == 0 and pooled.abs().sum() == 0
    _, ctx, _ = ex.collate(examples, empty, 0.5, torch.Generator().manual_seed(1))
    kept = ctx[:, 0, 0].tolist()
    assert 0 < sum(v > 0 for v in kept) < 4 and all(v in (0, i + 1) for i, v in enumerate(kept))


def test_training_on_aspect_buckets_keeps_batches_in_one_bucket(comfy, pack, folder, monkeypatch):
    import training_data
    ds_mod = _dataset_mod(pack)
    ex_mod = importlib.import_module(f"{pack.__name__}.trainer.examples")
    loop = importlib.import_module(f"{pack.__name__}.trainer.loop")
    objective = importlib.import_module(f"{pack.__name__}.trainer.objective")
    model, clip, vae = training_data.load_models(comfy)
    ds = ds_mod.load_folder(str(folder), "", resolution=256, crop="aspect buckets")
    with torch.inference_mode():
        examples = ex_mod.Encoder(model, clip, vae).examples(ex_mod.sources_from_dataset(ds), repeats=2)
    assert len(examples) == 2 * len(ds.images) and len({tuple(e.latent.shape) for e in examples}) >= 3
    shapes, tokens = [], []
    real_sample = objective.sample_sigmas

    def spy(method, batch, generator, **kw):
        tokens.append(kw["image_tokens"])
        return real_sample(method, batch, generator, **kw)
    monkeypatch.setattr(objective, "sample_sigmas", spy)
    real_collate = loop.collate
    monkeypatch.setattr(loop, "collate", lambda batch, *a: shapes.append({tuple(e.latent.shape) for e in batch}) or real_collate(batch, *a))
    with torch.inference_mode():
        loop.train_flux_lora(model, examples, loop.TrainSettings(steps=6, batch_size=2, sigma_sampling="flux_shift"))
    assert all(len(s) == 1 for s in shapes)  # a batch never mixes buckets
    for s, t in zip(shapes, tokens):  # flux_shift uses that bucket's own token count
        (c, h, w), = s
        assert t == (h // 2) * (w // 2)
