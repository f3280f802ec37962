"""AutoCaption plumbing that needs no model: caption modes, sidecar safety, the offline message."""
import pytest


def test_modes_never_destroy_user_captions_unless_overwrite(core):
    c = core.caption
    assert c.merge_caption("my caption", "auto text", "fill missing") == "my caption"
    assert c.merge_caption("", "auto text", "fill missing") == "auto text"
    assert c.merge_caption("my caption.", "auto text", "append") == "my caption, auto text"
    assert c.merge_caption("", "auto text", "append") == "auto text"
    assert c.merge_caption("my caption", "auto text", "overwrite") == "auto text"
    assert not c.needs_caption("x", "fill missing") and c.needs_caption("", "fill missing") and c.needs_caption("x", "append")


def test_sidecars_are_not_clobbered(core, tmp_path):
    c = core.caption
    image = tmp_path / "photo.png"
    (tmp_path / "photo.txt").write_text("mine")
    assert "kept" in c.write_sidecar(image, ".txt", "auto", overwrite=False)
    assert (tmp_path / "photo.txt").read_text() == "mine"
    assert "written" in c.write_sidecar(image, ".txt", "auto", overwrite=True)
    assert (tmp_path / "photo.txt").read_text() == "auto\n"
    assert "written" in c.write_sidecar(tmp_path / "new.jpg", "caption", "hello", overwrite=False)
    assert (tmp_path / "new.caption").read_text() == "hello\n"


def test_missing_model_offline_says_what_to_put_where(core, tmp_path, monkeypatch):
    import huggingface_hub
    c = core.caption

    def offline(**kwargs):
        raise OSError("no connection to the hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(RuntimeError) as e:
        c.locate("Florence-2-large", [str(tmp_path / "captioners")])
    msg = str(e.value)
    assert str(tmp_path / "captioners" / "Florence-2-large") in msg and "florence-community/Florence-2-large" in msg
    with pytest.raises(FileNotFoundError, match="expected a model folder"):
        c.locate("my-own-model", [str(tmp_path / "captioners")])
