"""Trained adapters -> ComfyUI-native weight keys (``diffusion_model.<layer>.<suffix>``), the layout ComfyUI's LoRA
loader reads and trainer/export.py turns into kohya/LyCORIS or diffusers files. Every formula here reproduces the weight
peft trains with (tests check each against ComfyUI's own ``calculate_weight``)."""
import torch


def lora_keys(key: str, params: dict, alpha: float, rank: int, offset=None, base_weight=None) -> dict:
    """LoRA: ComfyUI applies ``W + alpha/rank * up @ down``, the scale peft trains with.

    ``offset`` (A0, -B0) is the frozen init adapter of PiSSA/OLoRA/LoRA-GA: the file then holds the rank-2r LoRA
    ``[B | -B0] @ [A ; A0]`` with alpha doubled, i.e. ``W + s*(B A - B0 A0)`` on the untouched base (peft's own
    conversion). ``base_weight`` (DoRA) adds ComfyUI's output-axis ``dora_scale``, which normalises by the *base*
    weight's row norm: ``dora_scale = m * ||W|| / ||W + s*B A||`` reproduces peft's DoRA weight exactly."""
    down, up = params["lora_A"], params["lora_B"]
    out = {}
    if offset is not None:
        down = torch.cat([down, offset[0].to(down)], dim=0)
        up = torch.cat([up, offset[1].to(up)], dim=1)
        alpha = 2 * alpha
    out[f"{key}.lora_up.weight"] = up.cpu().clone()
    out[f"{key}.lora_down.weight"] = down.cpu().clone()
    out[f"{key}.alpha"] = torch.tensor(float(alpha))
    if base_weight is not None:
        with torch.no_grad():
            w = base_weight.float().to(up.device)
            ratio = w.norm(dim=1) / (w + (alpha / rank) * (up @ down)).norm(dim=1)
            out[f"{key}.dora_scale"] = (params["magnitude"] * ratio).reshape(-1, 1).cpu().clone()
    return out


def lokr_keys(key: str, params: dict, scale: float, alpha: float, rank: int) -> dict:
    """LoKr (LyCORIS keys ``lokr_w1``/``lokr_w1_a``/``lokr_w1_b``/``lokr_w2``/``lokr_w2_a``/``lokr_w2_b``/``alpha``).
    peft scales ``kron(w1, w2)`` by alpha/rank; ComfyUI by alpha/rank when w1 or w2 is a low-rank product and by 1
    otherwise, so a full-matrix pair carries the scale in w2."""
    out = {f"{key}.{suffix}": p.detach().float().cpu().clone() for suffix, p in params.items()}
    if "lokr_w1" in params and "lokr_w2" in params:
        out[f"{key}.lokr_w2"] = out[f"{key}.lokr_w2"] * scale
    else:
        out[f"{key}.alpha"] = torch.tensor(float(alpha))
    return out


def loha_keys(key: str, params: dict, alpha: float) -> dict:
    """LoHa (LyCORIS keys ``hada_w1_a``/``hada_w1_b``/``hada_w2_a``/``hada_w2_b``/``alpha``): peft and ComfyUI both apply
    ``(w1_a @ w1_b) * (w2_a @ w2_b) * alpha / rank`` (ComfyUI divides the stored alpha by ``w1_b``'s rows, the rank)."""
    out = {f"{key}.{suffix}": p.detach().float().cpu().clone() for suffix, p in params.items()}
    out[f"{key}.alpha"] = torch.tensor(float(alpha))
    return out
