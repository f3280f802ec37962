"""Which layers get LoRA: target presets and block selections."""
import pytest


def test_target_presets_and_block_selection(core):
    names = core.targets.target_module_names("attention", "double 1, single 0-1", 2, 2)
    assert names == ["double_blocks.1.img_attn.qkv", "double_blocks.1.img_attn.proj", "double_blocks.1.txt_attn.qkv",
                     "double_blocks.1.txt_attn.proj", "single_blocks.0.linear1", "single_blocks.0.linear2",
                     "single_blocks.1.linear1", "single_blocks.1.linear2"]
    assert len(core.targets.target_module_names("all linear", "all", 19, 38)) == 304  # kohya's count on FLUX.1-dev
    for bad in ("double 5", "triple 1", "single 3-1"):
        with pytest.raises(ValueError):
            core.targets.target_module_names("all linear", bad, 2, 2)
