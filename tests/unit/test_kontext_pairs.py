"""Dataset Loader reads FLUX.1 Kontext pairs: a control folder matched by file name, or name_control.* next to name.*;
unpaired files are listed, controls are resized/cropped to their target's bucket, and the pair is in the fingerprint."""
import numpy as np
import pytest
from PIL import Image


def _image(path, size, value):
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def test_pairs_in_one_folder_by_name_control(core, tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    _image(folder / "001.png", (96, 64), 200)
    _image(folder / "001_control.png", (96, 64), 40)
    _image(folder / "002.png", (96, 64), 120)
    _image(folder / "003_control.png", (96, 64), 10)
    (folder / "001.txt").write_text("make it bright")
    ds = core.folder.load_folder(str(folder), [], resolution=64, crop="aspect buckets")
    assert [im.name for im in ds.images] == ["001.png"]
    (im,) = ds.images
    assert im.caption == "make it bright" and im.control.shape == im.pixels.shape and int(im.control[0, 0, 0]) == 40
    problems = "\n".join(ds.problems)
    assert "002.png: no control image (expected 002_control.* next to it) - skipped" in problems
    assert "003_control.png: control image without a target image of the same name - ignored" in problems
    assert core.dataset.is_paired(ds) and "1 Kontext pairs" in core.dataset.report(ds)


def test_pairs_from_a_control_folder_are_fitted_to_the_target(core, tmp_path):
    targets, controls = tmp_path / "after", tmp_path / "before"
    targets.mkdir(), controls.mkdir()
    _image(targets / "001.png", (128, 64), 200)
    _image(targets / "002.png", (128, 64), 200)
    _image(controls / "001.jpg", (64, 64), 50)      # another shape: fitted to the target's bucket
    _image(controls / "004.png", (64, 64), 50)
    ds = core.folder.load_folder(str(targets), [], resolution=64, crop="aspect buckets", small_images="include",
                                 control_folder=str(controls))
    (im,) = ds.images
    assert im.name == "001.png" and im.control.shape == im.pixels.shape
    assert any("002.png: no control image (expected 002.* in" in p for p in ds.problems)
    assert any("004.png: control image without a target" in p for p in ds.problems)
    assert any("001.jpg: 64x64 has another shape than 001.png" in n for n in ds.notes)
    before = ds.fingerprint()
    _image(controls / "001.jpg", (64, 64), 90)
    again = core.folder.load_folder(str(targets), [], resolution=64, crop="aspect buckets", small_images="include",
                                    control_folder=str(controls))
    assert again.fingerprint() != before   # the control image is part of the training data


def test_folders_without_controls_stay_unpaired_and_a_wrong_control_folder_is_refused(core, tmp_path):
    folder, other = tmp_path / "plain", tmp_path / "other"
    folder.mkdir(), other.mkdir()
    _image(folder / "a.png", (64, 64), 1)
    _image(other / "zzz.png", (64, 64), 1)
    ds = core.folder.load_folder(str(folder), [], resolution=64)
    assert ds.images[0].control is None and not core.dataset.is_paired(ds)
    assert not any("control" in p for p in ds.problems + ds.notes)
    with pytest.raises(ValueError, match="no image in the control folder .* has the name of an image"):
        core.folder.load_folder(str(folder), [], resolution=64, control_folder=str(other))


def test_a_control_folder_that_is_the_image_folder_is_refused(core, tmp_path):
    """control_folder set to the image folder itself trained silently with every image as its own control."""
    folder = tmp_path / "after"
    folder.mkdir()
    _image(folder / "001.png", (64, 64), 200)
    _image(folder / "002.png", (64, 64), 100)
    for same in (str(folder), str(folder) + "/", str(tmp_path / "after" / ".." / "after")):
        with pytest.raises(ValueError, match="control folder .* is the image folder itself, so every image would be its "
                                             "own control. The control folder must hold the 'before' images"):
            core.folder.load_folder(str(folder), [], resolution=64, control_folder=same)
    link = tmp_path / "link_to_after"
    link.symlink_to(folder, target_is_directory=True)
    with pytest.raises(ValueError, match="is the image folder itself"):
        core.folder.load_folder(str(folder), [], resolution=64, control_folder=str(link))


def test_a_pair_whose_control_is_the_image_itself_is_skipped(core, tmp_path):
    targets, controls = tmp_path / "after", tmp_path / "before"
    targets.mkdir(), controls.mkdir()
    _image(targets / "001.png", (64, 64), 200)
    _image(targets / "002.png", (64, 64), 100)
    _image(controls / "001.png", (64, 64), 50)
    (controls / "002.png").symlink_to(targets / "002.png")   # the target file itself
    ds = core.folder.load_folder(str(targets), [], resolution=64, control_folder=str(controls))
    assert [im.name for im in ds.images] == ["001.png"]
    assert any(p.startswith("002.png: its control image 002.png is the same image") and "skipped" in p
               for p in ds.problems), ds.problems
    alone = tmp_path / "alone"
    alone.mkdir()
    _image(alone / "003.png", (64, 64), 30)
    (alone / "003_control.png").write_bytes((alone / "003.png").read_bytes())   # name_control.* next to it: a copy
    with pytest.raises(ValueError, match="no usable images.*003.png: its control image 003_control.png is the same image"):
        core.folder.load_folder(str(alone), [], resolution=64)
