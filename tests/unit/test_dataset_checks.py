"""Dataset Loader on hostile folders: odd caption encodings, 16-bit images, decompression bombs, bad caption
extensions, duplicates, orphans, sub-folders, broken links, name clashes, over-long captions, and where a folder may be."""
import io
import os

import numpy as np
import pytest
from PIL import Image


def _photo(folder, name, value=(120, 60, 30), size=96):
    Image.new("RGB", (size, size), value).save(folder / name)


def _load(core, folder, **kw):
    return core.folder.load_folder(str(folder), [], resolution=64, **kw)


def test_caption_files_in_other_encodings_are_read_and_reported(core, tmp_path):
    text = "une café crème, naïve"
    for i, (name, data) in enumerate((("bom", b"\xef\xbb\xbf" + text.encode("utf-8")), ("utf16", text.encode("utf-16")),
                                      ("cp1252", text.encode("cp1252")), ("latin1", text.encode("latin-1")),
                                      ("plain", text.encode("utf-8")))):
        _photo(tmp_path, f"{name}.png", (i * 40, 50, 50))
        (tmp_path / f"{name}.txt").write_bytes(data)
    ds = _load(core, tmp_path)
    assert {im.name: im.caption for im in ds.images} == {f"{n}.png": text for n in ("bom", "cp1252", "latin1", "plain", "utf16")}
    notes = "\n".join(ds.notes)
    assert "bom.txt: UTF-8 with a byte-order mark" in notes and "utf16.txt: UTF-16" in notes
    assert "cp1252.txt: not UTF-8: read as Windows-1252" in notes and "plain.txt" not in notes


def test_16_bit_greyscale_keeps_its_tones(core, tmp_path):
    ramp = (np.linspace(0, 65535, 128 * 128).reshape(128, 128)).astype(np.uint16)  # full 16-bit range
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    (im,) = _load(core, tmp_path).images
    values = im.pixels[..., 0].float()
    assert im.pixels.shape[-1] == 3 and 100 < values.mean() < 155  # a mid grey on average, not white (255)
    assert values.min() < 20 and values.max() > 235


def test_one_bad_file_never_stops_the_folder(core, tmp_path, monkeypatch):
    from PIL import Image as PILImage
    _photo(tmp_path, "good.png")
    Image.new("RGB", (400, 400), (1, 2, 3)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 50_000)  # 160,000 pixels > 2x the limit: a decompression bomb
    ds = _load(core, tmp_path)
    assert [im.name for im in ds.images] == ["good.png"]
    assert any(p.startswith("bomb.png:") and "DecompressionBombError" in p for p in ds.problems)


@pytest.mark.parametrize("extension,message", [(".png", "not a text file extension"), ("", "not a file extension"),
                                               (".", "not a file extension"), ("a/b", "not a file extension")])
def test_caption_extension_is_checked_before_reading(core, tmp_path, extension, message):
    _photo(tmp_path, "a.png")
    with pytest.raises(ValueError, match=message):
        _load(core, tmp_path, caption_extension=extension)


def test_duplicates_keep_the_captioned_copy(core, tmp_path):
    _photo(tmp_path, "a_first.png")
    (tmp_path / "b_second.png").write_bytes((tmp_path / "a_first.png").read_bytes())
    (tmp_path / "b_second.txt").write_text("my caption")
    ds = _load(core, tmp_path)
    assert [(im.name, im.caption) for im in ds.images] == [("b_second.png", "my caption")]
    assert "a_first.png: duplicate of b_second.png (same content) - skipped" in ds.problems


def test_everything_that_is_not_trained_on_is_listed(core, tmp_path):
    _photo(tmp_path, "cat.png", (10, 20, 30))
    _photo(tmp_path, "cat.jpg", (200, 20, 30))
    (tmp_path / "cat.txt").write_text("a cat")
    (tmp_path / "lonely.txt").write_text("a caption without its image")
    (tmp_path / "more_photos").mkdir()
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    ds = _load(core, tmp_path)
    notes = "\n".join(ds.notes)
    assert "cat.jpg and cat.png share the caption file cat.txt" in notes
    assert "caption file(s) with no image of the same name: lonely.txt" in notes
    assert "sub-folder(s), not read" in notes and "more_photos" in notes
    assert "broken link(s): link.png" in notes
    assert sorted(im.name for im in ds.images) == ["cat.jpg", "cat.png"]


def test_captions_longer_than_512_t5_tokens_are_warned_about(core, tmp_path):
    _photo(tmp_path, "long.png")
    (tmp_path / "long.txt").write_text("a very detailed description " * 300)
    report = core.dataset.report(_load(core, tmp_path))
    assert "longer than the 512 T5 tokens FLUX.1 was trained with (longest: long.png" in report


def test_a_file_given_as_the_folder_says_so(core, tmp_path):
    _photo(tmp_path, "photo.png")
    with pytest.raises(ValueError, match=f"is a file, not a folder.*'{tmp_path}'"):
        core.folder.load_folder(str(tmp_path / "photo.png"), [])


def test_folders_outside_input_and_datasets_only_on_a_local_server(core, tmp_path):
    inside, outside = tmp_path / "input", tmp_path / "elsewhere"
    for folder in (inside / "mine", outside):
        folder.mkdir(parents=True)
        _photo(folder, "a.png")
    assert core.folder.resolve_folder("mine", [str(inside)], allow_outside=False) == inside / "mine"
    assert core.folder.resolve_folder(str(inside / "mine"), [str(inside)], allow_outside=False) == inside / "mine"
    for name in (str(outside), "../elsewhere", "mine/../../elsewhere"):
        assert core.folder.resolve_folder(name, [str(inside)], allow_outside=True)  # a local server: anywhere
        with pytest.raises(core.folder.FolderNotAllowed, match="--listen.*extra_model_paths.yaml"):
            core.folder.resolve_folder(name, [str(inside)], allow_outside=False)
    os.symlink(outside, inside / "sneaky")  # a link out of the input folder is outside too
    with pytest.raises(core.folder.FolderNotAllowed):
        core.folder.resolve_folder("sneaky", [str(inside)], allow_outside=False)


def test_server_is_local_follows_listen(core, monkeypatch):
    from comfy.cli_args import args
    for listen, local in (("127.0.0.1", True), ("0.0.0.0,::", False), ("192.168.1.5", False), ("::1", True)):
        monkeypatch.setattr(args, "listen", listen)
        assert core.comfy_features.server_is_local() is local, listen
