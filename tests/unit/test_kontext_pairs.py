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
    assert im.caption == "make it bright" and im.controls[0].shape == im.pixels.shape and int(im.controls[0][0, 0, 0]) == 40
    problems = "\n".join(ds.problems)
    assert "002.png: no control image (expected 002_control.* next to it) - skipped" in problems
    assert "003_control.png: control image without a target image of the same name - ignored" in problems
    assert core.dataset.is_paired(ds) and "1 edit pairs with 1 reference image each" in core.dataset.report(ds)


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
    assert im.name == "001.png" and im.controls[0].shape == im.pixels.shape
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
    assert ds.images[0].controls == () and not core.dataset.is_paired(ds)
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


def test_several_references_per_target_in_one_folder(core, tmp_path):
    """name_control_1.*, name_control_2.* next to name.*: the references in their order; a target with fewer than
    the others, ambiguous names or a gap in the numbers is listed and skipped, never guessed."""
    folder = tmp_path / "pairs"
    folder.mkdir()
    for stem, value in (("a", 200), ("a_control_1", 10), ("a_control_2", 20),
                        ("b", 201), ("b_control", 11), ("b_control_2", 21),        # name_control is the first
                        ("c", 202), ("c_control_1", 12),                           # one of two
                        ("d", 203), ("d_control", 13), ("d_control_1", 14),        # the first twice
                        ("e", 204), ("e_control_1", 15), ("e_control_3", 16)):     # no second
        _image(folder / f"{stem}.png", (64, 64), value)
    ds = core.folder.load_folder(str(folder), [], resolution=64)
    assert [im.name for im in ds.images] == ["a.png", "b.png"]
    assert [[int(c[0, 0, 0]) for c in im.controls] for im in ds.images] == [[10, 20], [11, 21]]
    problems = "\n".join(ds.problems)
    assert ("c.png: 1 of the 2 reference images the other pairs have (expected c_control_1.*, c_control_2.* next to "
            "it) - skipped") in problems
    assert "d.png: d_control.png and d_control_1.png are the same reference" in problems
    assert "e.png: its references are numbered 1, 3 - reference 2 is missing - skipped" in problems
    assert "2 edit pairs with 2 reference images each" in core.dataset.report(ds)


def test_several_control_folders_one_per_reference(core, tmp_path):
    targets, first, second = tmp_path / "after", tmp_path / "scene", tmp_path / "object"
    for folder in (targets, first, second):
        folder.mkdir()
    for stem in ("001", "002"):
        _image(targets / f"{stem}.png", (64, 64), 200)
        _image(first / f"{stem}.png", (64, 64), 30)
    _image(second / "001.jpg", (64, 64), 60)
    ds = core.folder.load_folder(str(targets), [], resolution=64, control_folder=f"{first}, {second}")
    (im,) = ds.images
    assert im.name == "001.png" and [int(c[0, 0, 0]) for c in im.controls] == [30, 60]
    assert any(p.startswith("002.png: 1 of the 2 reference images") and f"expected 002.* in {first}, {second}" in p
               for p in ds.problems), ds.problems
    swapped = core.folder.load_folder(str(targets), [], resolution=64, control_folder=f"{second}, {first}")
    assert swapped.fingerprint() != ds.fingerprint()   # the order of the references is part of the data
    with pytest.raises(ValueError, match="are the same folder: name one folder per reference image"):
        core.folder.load_folder(str(targets), [], resolution=64, control_folder=f"{first}, {first}")


def test_a_one_reference_pair_keeps_its_fingerprint(core, tmp_path):
    """Kontext runs saved before several references existed still resume: one reference is fingerprinted as before."""
    import hashlib
    folder = tmp_path / "pairs"
    folder.mkdir()
    _image(folder / "001.png", (64, 64), 200)
    _image(folder / "001_control.png", (64, 64), 40)
    ds = core.folder.load_folder(str(folder), [], resolution=64)
    (im,) = ds.images
    h = hashlib.sha256(f"{ds.resolution}|{ds.crop}".encode())
    h.update(f"|{im.sha256}|{im.bucket}|{im.caption}".encode())
    h.update(f"|control {im.control_sha256s[0]}".encode())
    assert ds.fingerprint() == h.hexdigest()
