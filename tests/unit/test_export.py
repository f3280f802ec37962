"""LoRA file plumbing that needs no training: safe file names inside the loras folder, never overwriting."""
import pytest


@pytest.mark.parametrize("prefix", ["../escape", "/abs/path", "a/../../b", "C:/x", "", "dir/"])
def test_prefix_outside_loras_folder_is_rejected(core, tmp_path, prefix):
    with pytest.raises(ValueError, match="prefix"):
        core.export.write_new_file(str(tmp_path), prefix, 5, b"x")


def test_new_file_never_overwrites(core, tmp_path):
    first = core.export.write_new_file(str(tmp_path), "sub/name", 12, b"one")
    second = core.export.write_new_file(str(tmp_path), "sub/name", 12, b"two")
    assert first.endswith("sub/name_000012steps_00001.safetensors") and second.endswith("_00002.safetensors")
    assert open(first, "rb").read() == b"one" and open(second, "rb").read() == b"two"
