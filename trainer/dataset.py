"""Training examples: VAE latents and text conditioning computed once per run with ComfyUI's VAE and CLIP."""
from dataclasses import dataclass

import torch


@dataclass
class Example:
    latent: torch.Tensor   # (16, h, w), the model's latent space (after process_latent_in), float32 CPU
    context: torch.Tensor  # (tokens, dim) T5 sequence, float32 CPU
    pooled: torch.Tensor   # (768,) CLIP-L pooled, float32 CPU
    caption: str


def split_captions(text: str, count: int):
    """One caption per line for ``count`` images; a single line is used for every image."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if len(lines) == 1:
        return lines * count
    if len(lines) != count:
        raise ValueError(f"Got {count} images but {len(lines)} caption lines. Write one caption per line "
                         "(in image order), or a single line to use for every image.")
    return lines


def center_crop_to_multiple(images: torch.Tensor, multiple: int = 16) -> torch.Tensor:
    """Crops IMAGE (B, H, W, C) so both sides are multiples of 16 (8x VAE downscale x 2x2 Flux patches)."""
    h, w = images.shape[1], images.shape[2]
    nh, nw = h - h % multiple, w - w % multiple
    if nh == 0 or nw == 0:
        raise ValueError(f"Images of {w}x{h} pixels are too small to train on (need at least {multiple}x{multiple}).")
    top, left = (h - nh) // 2, (w - nw) // 2
    return images[:, top:top + nh, left:left + nw, :]


def encode_text(clip, caption: str):
    cond = clip.encode_from_tokens_scheduled(clip.tokenize(caption))
    context, extra = cond[0][0], cond[0][1]
    if "pooled_output" not in extra:
        raise ValueError("The CLIP input gave no pooled output; connect a FLUX CLIP (DualCLIPLoader, type 'flux').")
    return context[0].float().cpu(), extra["pooled_output"][0].float().cpu()


def encode_examples(model_patcher, clip, vae, images: torch.Tensor, captions: list) -> list:
    """VAE-encodes each image and text-encodes each distinct caption once."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError("The images input is empty.")
    if len(captions) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {len(captions)} captions.")
    pixels = center_crop_to_multiple(images[..., :3])
    raw = vae.encode(pixels)
    if raw.shape[1] != 16:
        raise ValueError(f"The VAE gives {raw.shape[1]}-channel latents; FLUX.1 needs its 16-channel VAE (ae.safetensors).")
    latents = model_patcher.model.process_latent_in(raw.float()).cpu()
    texts = {c: encode_text(clip, c) for c in dict.fromkeys(captions)}
    return [Example(latent=latents[i], context=texts[c][0], pooled=texts[c][1], caption=c)
            for i, c in enumerate(captions)]


def batch_key(example: Example):
    """Examples batch together only when latent size and T5 length agree (no padding, no masks)."""
    return tuple(example.latent.shape), example.context.shape[0]


def epoch_batches(examples: list, batch_size: int, generator: torch.Generator):
    """Endless batches of indices: each epoch visits every example once, in a seeded random order.

    Batches never mix latent sizes or text lengths. A group smaller than the batch size repeats
    its own examples to fill the batch; a group's last partial batch is dropped for that epoch.
    """
    groups = {}
    for i, e in enumerate(examples):
        groups.setdefault(batch_key(e), []).append(i)
    groups = list(groups.values())
    while True:
        batches = []
        for members in groups:
            order = [members[j] for j in torch.randperm(len(members), generator=generator).tolist()]
            if len(order) < batch_size:
                batches.append((order * batch_size)[:batch_size])
                continue
            batches += [order[s:s + batch_size] for s in range(0, len(order) - batch_size + 1, batch_size)]
        for j in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[j]


def collate(examples: list):
    latents = torch.stack([e.latent for e in examples])
    context = torch.stack([e.context for e in examples])
    pooled = torch.stack([e.pooled for e in examples])
    return latents, context, pooled
