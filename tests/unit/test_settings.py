"""The settings declaration (trainer/settings.py): validation, presets, the node widgets generated from it, and the
README's settings table, which must match it."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_has_help_and_a_valid_default(core):
    s = core.settings
    for name, typ, default, meta in s.declared():
        assert len(meta["help"]) > 20, name
        assert isinstance(default, typ), name
        if meta["choices"] is not None:
            assert default in meta["choices"], name
    s.TrainSettings()  # the defaults validate


def test_bad_values_are_reported_together(core):
    with pytest.raises(ValueError) as e:
        core.settings.TrainSettings(steps=0, optimizer="sgd", warmup_steps=0, learning_rate=2.0)
    msg = str(e.value)
    assert "steps must be at least 1" in msg and "optimizer must be one of" in msg and "learning_rate must be at most" in msg
    with pytest.raises(ValueError, match="warmup_steps .10. must be fewer than steps .10."):
        core.settings.TrainSettings(steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="Unknown training settings: dropout"):
        core.settings.TrainSettings().with_changes(dropout=0.1)


def test_presets_are_complete_and_alpha_follows_rank(core):
    s = core.settings
    assert s.DEFAULT_PRESET == "balanced" and s.TrainSettings.from_preset("balanced") == s.TrainSettings()
    for name in s.PRESETS:
        settings = s.TrainSettings.from_preset(name)
        assert name in s.PRESET_NOTES
        assert settings.effective_alpha == settings.rank  # alpha 0 = rank: scale 1 whatever the rank
    assert s.TrainSettings.from_preset("style", rank=64).lora.alpha == 64.0
    assert s.TrainSettings(rank=32, alpha=16).lora.alpha == 16.0
    with pytest.raises(ValueError, match="Unknown preset"):
        s.TrainSettings.from_preset("extreme")


def test_train_node_shows_few_widgets_and_advanced_node_the_rest(pack_nodes, core):
    train = pack_nodes.train.FluxLoRATrain.define_schema()
    widgets = [i.id for i in train.inputs if i.get_io_type() in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
    assert widgets == ["preset", "steps", "learning_rate", "rank", "seed", "resume"]  # + 'control after generate'
    assert all(i.tooltip for i in train.inputs)
    advanced = pack_nodes.advanced.AdvancedSettings.define_schema()
    assert [i.id for i in advanced.inputs] == core.settings.advanced_names()
    assert set(core.settings.basic_names()) | set(core.settings.advanced_names()) == {n for n, *_ in core.settings.declared()}
    for i in advanced.inputs:  # every advanced widget starts at 'the preset's value' and may be missing (older files)
        assert i.default in ("preset", -1, ""), i.id
        assert "preset" in i.tooltip and i.optional


def test_advanced_widgets_override_only_what_was_changed(pack_nodes):
    widgets = pack_nodes.settings_widgets
    values = {"optimizer": "preset", "warmup_steps": -1, "blocks": "", "use_dora": "on", "alpha": 8.0,
              "caption_dropout": 0.0, "gradient_checkpointing": "off"}
    assert widgets.overrides_from_widgets(values) == {"use_dora": True, "alpha": 8.0, "caption_dropout": 0.0,
                                                      "gradient_checkpointing": False}
    out = pack_nodes.advanced.AdvancedSettings.execute(**{**{i.id: i.default for i in
                                                            pack_nodes.advanced.AdvancedSettings.define_schema().inputs},
                                                         "optimizer": "adafactor"})
    assert out.result[0] == {"optimizer": "adafactor"}


def _readme_presets():
    text = README.read_text()
    table = text[text.index("| setting |"):]
    table = table[:table.index("\n\n")]
    rows = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in table.splitlines()]
    header, body = rows[0], rows[2:]
    return header[1:], {r[0]: dict(zip(header[1:], r[1:])) for r in body}


def test_readme_settings_table_matches_the_declaration(core):
    """Every setting is a row of the README table, with each preset's value in its column."""
    s = core.settings
    presets, rows = _readme_presets()
    assert presets[:len(s.PRESETS)] == list(s.PRESETS)
    assert set(rows) == {name for name, *_ in s.declared()}, set(rows) ^ {name for name, *_ in s.declared()}
    for preset in s.PRESETS:
        values = s.TrainSettings.from_preset(preset).as_dict()
        for name, cells in rows.items():
            assert _same(cells[preset], values[name]), (preset, name, cells[preset], values[name])


def _same(cell, value):
    if isinstance(value, bool):
        return cell == ("on" if value else "off")
    if isinstance(value, (int, float)):
        return float(re.sub(r"[^0-9.e+-]", "", cell)) == float(value)
    return cell == value
