"""What both diffusers check scripts do: load a LoRA into a diffusers pipeline, fuse it, and compare the weight changes
with the expected deltas."""
import torch


def load_and_fuse(pipe, transformer, lora_path: str):
    """(weights before, weights after) ``pipe.load_lora_weights`` + ``fuse_lora`` (peft's wrapper names removed)."""
    before = {k: v.clone() for k, v in transformer.state_dict().items()}
    pipe.load_lora_weights(lora_path)
    pipe.fuse_lora()
    after = {k.replace(".base_layer", ""): v for k, v in transformer.state_dict().items() if "lora_" not in k}
    return before, after


def assert_fused_deltas(pairs, before: dict, after: dict, expected: dict) -> int:
    """``pairs``: (ComfyUI key, diffusers key, first row or None, rows). Every changed diffusers weight must be one of
    them and carry exactly its rows of the expected delta. Returns how many were checked."""
    checked = 0
    for comfy_key, diffusers_key, start, size in pairs:
        want = expected[comfy_key]
        if start is not None:
            want = want[start:start + size]
        got = after[diffusers_key] - before[diffusers_key]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=diffusers_key)
        checked += 1
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == checked, (len(changed), checked)
    return checked
