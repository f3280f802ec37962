"""Trigger words: put into every caption exactly once; how CLIP-L and T5 split them."""


def test_trigger_word_rules(core):
    trig = core.trigger
    assert trig.apply_trigger("a cat", "ohwx_cat") == "ohwx_cat, a cat"
    assert trig.apply_trigger("", "ohwx_cat") == "ohwx_cat"
    assert trig.apply_trigger("ohwx_cat, a cat", "ohwx_cat") == "ohwx_cat, a cat"  # never twice
    assert trig.apply_trigger("a photo of [trigger] on grass", "ohwx_cat", "replace [trigger]") == "a photo of ohwx_cat on grass"
    assert trig.apply_trigger("[trigger], a [trigger] cat", "ohwx_cat", "replace [trigger]") == "ohwx_cat, a cat"
    assert trig.apply_trigger("a cat", "ohwx_cat", "replace [trigger]") == "ohwx_cat, a cat"
    assert trig.apply_trigger("ohwx_catalog photo", "ohwx_cat") == "ohwx_cat, ohwx_catalog photo"  # whole words only


def test_token_split_warns_about_known_words(core):
    trig = core.trigger
    clip_tokens, t5_tokens = trig.token_split("mytoken_artstyle")
    assert len(clip_tokens) > 1 and len(t5_tokens) > 1
    assert any("single token" in w for w in trig.trigger_warnings("dog"))
    assert not trig.trigger_warnings("mytoken_artstyle")
