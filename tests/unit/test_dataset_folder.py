"""Dataset Loader's core on a realistic folder (real photos, bad files, missing captions), and Dataset from Images."""
import pytest
import torch

import photo_folder


@pytest.fixture(scope="module")
def folder(comfy):
    return photo_folder.write_photo_folder(comfy["root"] / "input" / "photos")


def test_square_crop_report(comfy, core, folder):
    ds_mod = core.dataset
    ds = core.folder.load_folder("photos", [str(comfy["root"] / "input")], resolution=512)  # relative to ComfyUI's input
    assert [im.name for im in ds.images] == ["astronaut.png", "chelsea.jpg", "coffee.webp", "rocket.png"]
    assert all(im.bucket == (512, 512) and im.pixels.dtype == torch.uint8 for im in ds.images)
    assert [im.caption_source for im in ds.images] == ["file", "file", "none", "file"]
    problems = "\n".join(ds.problems)
    for expected in ("astronaut_copy.png: duplicate of astronaut.png", "corrupt.jpg: corrupt, truncated",
                     "empty.png: empty file", "notes.jpg: not a readable image", "tiny.png: 100x100 is smaller than 512px - skipped",
                     "coffee.webp: no caption"):
        assert expected in problems, problems
    assert any("only 4 images" in w for w in ds.warnings) and any("resolution 512" in w for w in ds.warnings)
    assert any("readme.md" in n for n in ds.notes)
    text = ds_mod.report(ds)
    assert "4 images" in text and "3 captioned, 1 without caption" in text and "problem: corrupt.jpg" in text
    assert "repeats" not in text  # training is counted in steps; there is no per-epoch setting
    rocket = ds.images[3].pixels
    assert rocket[256, 262].tolist() == [255, 255, 255]  # transparent band flattened onto white
    grid = ds_mod.preview_grid(ds)
    assert grid.shape[0] == 1 and grid.shape[-1] == 3 and grid.dtype == torch.float32


def test_aspect_buckets_exif_and_small_images(core, folder):
    ds = core.folder.load_folder(str(folder), ["/nonexistent"], resolution=512, crop="aspect buckets",
                                  small_images="include")
    buckets = {im.name: im.bucket for im in ds.images}
    assert buckets["chelsea.jpg"][1] > buckets["chelsea.jpg"][0]  # EXIF rotation applied: portrait
    assert buckets["coffee.webp"][0] > buckets["coffee.webp"][1]
    for name, (w, h) in buckets.items():
        assert w % 64 == 0 and h % 64 == 0
    assert buckets["tiny.png"] == (64, 64)  # included, never upscaled in bucket mode
    assert buckets["astronaut.png"] == (512, 512)
    assert any("tiny.png: 100x100 is smaller than 512px - included" in p for p in ds.problems)


def test_bucket_sizes_never_upscale(core):
    assert core.folder.bucket_size(1200, 800, 1024) == (1152, 768)
    assert core.folder.bucket_size(3000, 2000, 1024) == (1216, 832)
    assert core.folder.bucket_size(300, 200, 1024) == (256, 192)


def test_missing_or_empty_folder_is_a_clear_error(comfy, core, tmp_path):
    (comfy["root"] / "input" / "photos_elsewhere").mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=r"'no_such_folder' does not exist.*looked up in .*input.*photos_elsewhere"):
        core.folder.load_folder("no_such_folder", [str(comfy["root"] / "input")])
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no usable images in .*only_text"):
        core.folder.load_folder(str(tmp_path / "only_text"), [str(tmp_path)])


def test_dataset_from_images_crops_to_multiples_of_16_and_pairs_captions(core):
    ds_mod = core.dataset
    images = torch.rand(3, 70, 50, 3)
    ds = ds_mod.dataset_from_images(images, ds_mod.split_captions("one caption for all", 3))
    assert [im.bucket for im in ds.images] == [(48, 64)] * 3 and [im.caption for im in ds.images] == ["one caption for all"] * 3
    assert ds.images[0].pixels.dtype == torch.uint8 and len({im.sha256 for im in ds.images}) == 3
    assert ds_mod.split_captions("a\nb\n\nc", 3) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="Got 3 images but 2 caption lines"):
        ds_mod.split_captions("a\nb", 3)
    with pytest.raises(ValueError, match="too small"):
        ds_mod.dataset_from_images(torch.rand(1, 8, 8, 3), ["x"])
