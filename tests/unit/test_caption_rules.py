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


@pytest.mark.parametrize("vram_gb,expected", [(24, "Qwen3-VL-8B-Instruct"), (16, "Qwen3-VL-4B-Instruct"),
                                              (8, "Qwen3-VL-2B-Instruct"), (4, "Florence-2-large")])
def test_auto_picks_the_best_captioner_that_fits_the_gpu(core, monkeypatch, tmp_path, vram_gb, expected):
    c = core.caption
    monkeypatch.setattr(c.mm, "get_total_memory", lambda device=None, *a, **k: vram_gb * 1024 ** 3)
    assert c.choose_captioner(c.AUTO, [str(tmp_path)], device="cuda:0") == expected
    assert c.choose_captioner(c.AUTO, [str(tmp_path)], device="cpu") == "Florence-2-large"   # the VLMs crawl on a CPU


def test_a_captioner_too_big_for_the_gpu_is_refused_before_loading(core, monkeypatch, tmp_path):
    c = core.caption
    monkeypatch.setattr(c.mm, "get_total_memory", lambda device=None, *a, **k: 12 * 1024 ** 3)
    with pytest.raises(ValueError, match="Qwen3-VL-8B-Instruct' needs about 19 GB of VRAM; this GPU has 12 GB"):
        c.choose_captioner("Qwen3-VL-8B-Instruct", [str(tmp_path)], device="cuda:0")
    assert c.choose_captioner("Qwen3-VL-4B-Instruct", [str(tmp_path)], device="cuda:0") == "Qwen3-VL-4B-Instruct"


@pytest.mark.parametrize("kind,style,paired,message", [
    ("florence2", "tags", False, "Florence-2 writes captions only, not tags"),
    ("florence2", "instruction", True, "Florence-2 writes captions only, not instruction"),
    ("llava", "instruction", True, "JoyCaption sees one image at a time"),
    ("qwen3_vl", "instruction", False, "this dataset has none"),
    ("qwen3_vl", "poem", False, "Unknown caption_style 'poem'"),
])
def test_styles_a_model_or_dataset_cannot_have_are_refused(core, kind, style, paired, message):
    with pytest.raises(ValueError, match=message):
        core.caption.check_style(kind, style, paired)


def test_each_model_gets_its_documented_prompt(core):
    c = core.caption
    qwen, joy = object.__new__(c.Captioner), object.__new__(c.Captioner)
    qwen.kind, joy.kind = "qwen3_vl", "llava"
    two_refs = qwen._messages(3, "instruction", "")
    assert two_refs[0]["content"][:3] == [{"type": "image"}] * 3
    assert two_refs[0]["content"][3]["text"].startswith("The first 2 image(s) show the original")
    assert qwen._messages(1, "tags", "")[0]["content"][1]["text"] == c.QWEN_PROMPTS["tags"]
    assert qwen._messages(1, "detailed", "Say what you see.")[0]["content"][1]["text"] == "Say what you see."
    assert qwen._messages(1, "short", c.DEFAULT_QWEN_PROMPT)[0]["content"][1]["text"] == c.QWEN_PROMPTS["short"]
    assert joy._messages(1, "detailed", "") == [
        {"role": "system", "content": "You are a helpful image captioner."},
        {"role": "user", "content": "Write a long descriptive caption for this image in a formal tone."}]
    assert c.check_style("florence2", "short", False, "my own prompt").startswith("note: Florence-2 takes no prompt")
    assert c.check_style("florence2", "short", False, c.DEFAULT_QWEN_PROMPT) == ""
