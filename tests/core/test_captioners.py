"""AutoCaption with tiny random Florence-2 / Qwen2.5-VL / Qwen3-VL / JoyCaption (LLaVA) models of the real transformers architectures, loaded
by the real loading code from ComfyUI's models/captioners folder. Checks the plumbing, not the words."""
import gc
from dataclasses import replace

import pytest

import photo_folder


def _dataset(comfy, core, name):
    folder = photo_folder.write_photo_folder(comfy["root"] / "input" / name)
    return folder, core.folder.load_folder(str(folder), [], resolution=512)


def _run(pack_nodes, dataset, model, mode, sidecars=False, batch_size=2):
    out = pack_nodes.caption.AutoCaption.execute(dataset=dataset, model=model, mode=mode, florence_task="<CAPTION>",
                              qwen_prompt="Describe the image.", batch_size=batch_size, max_new_tokens=12,
                              write_sidecars=sidecars)
    return out.result[0], out.result[1]


def test_fill_missing_only_captions_uncaptioned_and_unloads(comfy, core, pack_nodes, captioners):
    caption = core.caption
    folder, ds = _dataset(comfy, core, "cap_fill")
    before = {im.name: im.caption for im in ds.images}
    out, report = _run(pack_nodes, ds, "tiny-florence2", "fill missing", sidecars=True)
    after = {im.name: im for im in out.images}
    assert after["coffee.webp"].caption and after["coffee.webp"].caption_source == "auto"
    for name in ("astronaut.png", "chelsea.jpg", "rocket.png"):
        assert after[name].caption == before[name] and after[name].caption_source == "file"
    assert "captioned 1 of 4" in report
    assert (folder / "coffee.txt").read_text().strip() == after["coffee.webp"].caption  # new sidecar written
    assert (folder / "astronaut.txt").read_text() == before["astronaut.png"]             # user's file untouched
    assert ds.images[2].caption == ""  # the input dataset object is not modified
    gc.collect()
    assert len(caption.LIVE) == 0, "the captioner model must be released after the node"


@pytest.mark.parametrize("model", ["tiny-florence2", "tiny-qwen25vl"])
def test_overwrite_and_append(comfy, core, pack_nodes, captioners, model):
    folder, ds = _dataset(comfy, core, f"cap_modes_{model}")
    over, _ = _run(pack_nodes, ds, model, "overwrite", sidecars=True, batch_size=3)
    assert all(im.caption and im.caption_source == "auto" for im in over.images)
    assert [im.caption for im in over.images] != [im.caption for im in ds.images]
    assert (folder / "astronaut.txt").read_text().strip() == over.images[0].caption  # overwrite mode replaces files
    assert (folder / "astronaut.txt.bak").read_text() == ds.images[0].caption  # ... and keeps the user's as a backup
    appended, _ = _run(pack_nodes, ds, model, "append")
    astro = appended.images[0]
    assert astro.caption.startswith(ds.images[0].caption + ", ") and len(astro.caption) > len(ds.images[0].caption) + 2
    assert astro.caption_source == "file+auto"


def test_nothing_to_caption_loads_no_model(comfy, core, pack_nodes, captioners, monkeypatch):
    _, ds = _dataset(comfy, core, "cap_none")
    full = ds.with_images([replace(im, caption=im.caption or "given", caption_source="file") for im in ds.images])
    monkeypatch.setattr(core.caption, "Captioner", lambda *a, **k: pytest.fail("no captioner should load"))
    out, report = _run(pack_nodes, full, "tiny-florence2", "fill missing")
    assert [im.caption for im in out.images] == [im.caption for im in full.images] and "captioned 0 of 4" in report


def test_interrupt_stops_captioning_and_unloads(comfy, core, pack_nodes, captioners):
    import comfy.model_management as mm
    caption = core.caption
    _, ds = _dataset(comfy, core, "cap_interrupt")
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _run(pack_nodes, ds, "tiny-florence2", "overwrite")
    finally:
        mm.interrupt_current_processing(False)
    gc.collect()
    assert len(caption.LIVE) == 0


def test_captions_survive_a_folder_that_cannot_be_written(comfy, core, pack_nodes, captioners, tmp_path):
    """Sidecars that cannot be written are reported; the generated captions still reach the trainer."""
    folder, ds = _dataset(comfy, core, "cap_gone")
    folder.rename(tmp_path / "moved_away")  # the dataset folder is gone: every sidecar write fails
    out, report = _run(pack_nodes, ds, "tiny-florence2", "fill missing", sidecars=True)
    assert "coffee.txt: NOT written" in report and "still used for training" in report
    coffee = next(im for im in out.images if im.name == "coffee.webp")
    assert coffee.caption and coffee.caption_source == "auto"


@pytest.mark.parametrize("model", ["tiny-qwen3vl", "tiny-joycaption"])
@pytest.mark.parametrize("style", ["detailed", "short", "tags"])
def test_qwen3vl_and_joycaption_caption_in_each_style(comfy, core, pack_nodes, captioners, model, style, monkeypatch):
    """The newer captioners through the node: every image gets a caption, and the model is asked with its style's
    documented prompt (and JoyCaption's system prompt)."""
    _, ds = _dataset(comfy, core, f"styles_{model}")
    asked = []
    real = core.caption.Captioner._messages
    monkeypatch.setattr(core.caption.Captioner, "_messages", lambda self, *a: asked.append(real(self, *a)) or asked[-1])
    out = pack_nodes.caption.AutoCaption.execute(dataset=ds, model=model, mode="overwrite", florence_task="<CAPTION>",
                                                 qwen_prompt="", batch_size=2, max_new_tokens=8,
                                                 write_sidecars=False, caption_style=style)
    captioned, report = out.result[0], out.result[1]
    assert all(im.caption and im.caption_source == "auto" for im in captioned.images)
    prompts = core.caption.JOYCAPTION_PROMPTS if model == "tiny-joycaption" else core.caption.QWEN_PROMPTS
    texts = [m[-1]["content"] if model == "tiny-joycaption" else m[0]["content"][-1]["text"] for m in asked]
    assert texts == [prompts[style]] * len(ds.images)
    assert f"(overwrite, {style})" in report
    assert len(core.caption.LIVE) == 0


def test_instruction_captions_show_the_model_the_references_then_the_edit(comfy, core, pack_nodes, captioners,
                                                                         monkeypatch):
    """caption_style 'instruction' on edit pairs with two references: Qwen3-VL sees each target's references and the
    target in one message, in that order, and writes one instruction per pair."""
    import training_data
    pairs = training_data.paired_dataset(comfy, 2)
    ds = pairs.with_images([replace(im, caption="") for im in pairs.images])
    seen = []
    real = core.caption.Captioner.caption
    monkeypatch.setattr(core.caption.Captioner, "caption",
                        lambda self, items, *a, **k: seen.extend(items) or real(self, items, *a, **k))
    out = pack_nodes.caption.AutoCaption.execute(dataset=ds, model="tiny-qwen3vl", mode="fill missing",
                                                 florence_task="<CAPTION>", qwen_prompt="", batch_size=2,
                                                 max_new_tokens=8, write_sidecars=False, caption_style="instruction")
    assert all(im.caption for im in out.result[0].images)
    assert len(seen) == len(ds.images)
    for items, im in zip(seen, ds.images):
        assert len(items) == 3 and all(a.equal(b) for a, b in zip(items, [*im.controls, im.pixels]))


def test_a_style_the_model_cannot_write_is_refused_before_loading(comfy, core, pack_nodes, captioners, monkeypatch):
    _, ds = _dataset(comfy, core, "refused_style")
    monkeypatch.setattr(core.caption, "Captioner", lambda *a, **k: pytest.fail("no captioner should load"))
    with pytest.raises(ValueError, match="Florence-2 writes captions only, not tags"):
        pack_nodes.caption.AutoCaption.execute(dataset=ds, model="tiny-florence2", mode="overwrite",
                                               florence_task="<CAPTION>", qwen_prompt="", batch_size=2,
                                               max_new_tokens=8, write_sidecars=False, caption_style="tags")
    with pytest.raises(ValueError, match="'instruction' writes edit instructions for edit pairs"):
        pack_nodes.caption.AutoCaption.execute(dataset=ds, model="tiny-qwen3vl", mode="overwrite",
                                               florence_task="<CAPTION>", qwen_prompt="", batch_size=2,
                                               max_new_tokens=8, write_sidecars=False, caption_style="instruction")
