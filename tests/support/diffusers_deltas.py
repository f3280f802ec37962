"""The comparison both diffusers check scripts end with: the weight changes diffusers fused equal the expected deltas."""
import torch


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
