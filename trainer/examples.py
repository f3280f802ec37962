"""Training examples: VAE latents and text conditioning, computed once (and cached) with ComfyUI's VAE and CLIP."""
from dataclasses import dataclass

import torch

from .cache import NoCache, key, weights_fingerprint
from .dataset import T5_MAX_TOKENS, control_labels
from .flux_model import latent_channels, latent_downscale
from .predict import model_context


@dataclass
class Example:
    latent: torch.Tensor   # (C, h, w), the model's latent space (after process_latent_in), float32 CPU
    context: torch.Tensor  # (tokens, dim) text features (T5, or FLUX.2's LLM layers), float32 CPU
    pooled: torch.Tensor   # (768,) CLIP-L pooled (FLUX.1), (0,) for the families without one, float32 CPU
    references: tuple = ()  # edit pairs: each reference image's latent, in the model's latent space (same channels)


@dataclass
class Source:
    """One training image before encoding: ``identity`` names its content (file hash + processing)."""
    identity: str
    pixels: torch.Tensor  # (H, W, 3) float in [0, 1]
    caption: str
    controls: tuple = ()  # edit pairs: the reference images, like pixels


def sources_from_dataset(dataset):
    # cache keys name the pair (a one-reference pair keeps the key it always had)
    return [Source(f"file:{im.sha256}:{im.bucket}:{dataset.crop}:{dataset.resolution}"
                   + "".join(f":{label} {digest}" for label, digest in zip(control_labels(len(im.controls)),
                                                                           im.control_sha256s)),
                   im.pixels.float() / 255.0, im.caption, tuple(c.float() / 255.0 for c in im.controls))
            for im in dataset.images]


def _control_sources(source: Source) -> list:
    return [Source(f"{source.identity}:{label}", control, "")
            for label, control in zip(control_labels(len(source.controls)), source.controls)]


def tokenize(clip, caption: str):
    """ComfyUI's tokens for ``caption``, with the T5 sequence cut to FLUX.1's 512 tokens (its end token kept)."""
    tokens = clip.tokenize(caption)
    t5 = tokens.get("t5xxl") if isinstance(tokens, dict) else None
    if t5 and len(t5[0]) > T5_MAX_TOKENS:
        tokens["t5xxl"] = [t5[0][:T5_MAX_TOKENS - 1] + t5[0][-1:]]
    return tokens


def encode_text(clip, caption: str):
    """(context, pooled) for ``caption``; pooled is empty for text encoders without a pooled output (FLUX.2, Chroma:
    the CLIP's family is checked against the MODEL's before any encoding)."""
    cond = clip.encode_from_tokens_scheduled(tokenize(clip, caption))
    context, extra = cond[0][0], cond[0][1]
    pooled = extra.get("pooled_output")
    context = context[0].float().cpu()
    pooled = torch.zeros(0) if pooled is None else pooled[0].float().cpu()
    if not (torch.isfinite(context).all() and torch.isfinite(pooled).all()):
        raise ValueError(f"The text encoders gave NaN/inf values for the caption '{caption[:60]}': the CLIP input is "
                         "broken (try another text encoder file or weight dtype).")
    return context, pooled


def _fingerprint(obj, module):
    patches = getattr(getattr(obj, "patcher", None), "patches", None)
    if patches:  # a LoRA on the text encoder changes its output: no cache
        return None
    return weights_fingerprint(module)


class Encoder:
    """Encodes sources and captions, going through ``cache`` first. Counts what it really encoded."""

    def __init__(self, model_patcher, clip, vae, cache=None):
        self.model, self.clip, self.vae = model_patcher, clip, vae
        self.cache = cache or NoCache()
        self.vae_id = _fingerprint(vae, vae.first_stage_model)
        self.clip_id = _fingerprint(clip, clip.cond_stage_model)
        self.images_encoded = 0
        self.captions_encoded = 0
        self.on_progress = None   # called with (images encoded, images to encode) after each VAE call
        self.channels = latent_channels(model_patcher)      # 16 (FLUX.1, Chroma) or 128 (FLUX.2)
        self.downscale = latent_downscale(model_patcher)    # 8 or 16 pixels per latent

    def text(self, caption: str):
        k = key("text", caption, self.clip_id) if self.clip_id else None
        hit = self.cache.get("text", k, ("context", "pooled")) if k else None
        if hit is not None and hit["context"].ndim == 2 and hit["pooled"].ndim == 1:
            return self._as_model_reads(hit["context"]), hit["pooled"]
        context, pooled = encode_text(self.clip, caption)
        self.captions_encoded += 1
        if k:
            self.cache.put("text", k, {"context": context, "pooled": pooled})
        return self._as_model_reads(context), pooled

    def _as_model_reads(self, context):
        """The text as the model reads it (FLUX.2: left-padded to 512 tokens by ComfyUI's Flux2.extra_conds), so
        FLUX.2 captions of different lengths batch together."""
        return model_context(self.model.model, context[None])[0]

    def latents(self, sources):
        out, todo = {}, {}
        for s in sources:
            k = key("latent", s.identity, self.vae_id) if self.vae_id else None
            hit = self.cache.get("latent", k, ("latent",)) if k else None
            expected = (self.channels, s.pixels.shape[0] // self.downscale, s.pixels.shape[1] // self.downscale)
            if hit is not None and tuple(hit["latent"].shape) == expected:
                out[s.identity] = hit["latent"]
            else:
                todo.setdefault(tuple(s.pixels.shape), []).append((s, k))
        total, done = sum(len(group) for group in todo.values()), 0
        for group in todo.values():  # one VAE call per image size
            raw = self.vae.encode(torch.stack([s.pixels for s, _ in group]))
            done += len(group)
            if self.on_progress is not None:
                self.on_progress(done, total)
            if raw.shape[1] != self.channels:
                raise ValueError(f"The VAE gives {raw.shape[1]}-channel latents; this model needs {self.channels}-channel "
                                 "latents from its own VAE.")
            self.images_encoded += len(group)
            if not torch.isfinite(raw).all():
                raise ValueError("The VAE gave NaN/inf latents (for images of size "
                                 f"{group[0][0].pixels.shape[1]}x{group[0][0].pixels.shape[0]}): the VAE input is broken "
                                 "or the images hold invalid values.")
            for (s, k), latent in zip(group, raw.float().cpu()):
                out[s.identity] = latent
                if k:
                    self.cache.put("latent", k, {"latent": latent})
        return out

    def examples(self, sources):
        """Examples of ``sources``; a source with reference images (an edit pair) gets their latents as references."""
        controls = [c for s in sources for c in _control_sources(s)]
        raw = self.latents(list(sources) + controls)
        texts = {c: self.text(c) for c in dict.fromkeys(s.caption for s in sources)}
        model_space = lambda identity: self.model.model.process_latent_in(raw[identity][None])[0]
        return [Example(latent=model_space(s.identity), context=texts[s.caption][0], pooled=texts[s.caption][1],
                        references=tuple(model_space(c.identity) for c in _control_sources(s)))
                for s in sources]


def batch_key(example: Example):
    """Examples batch together only when latent size, T5 length and reference sizes agree (no padding, no masks)."""
    return (tuple(example.latent.shape), example.context.shape[0], tuple(tuple(r.shape) for r in example.references))


def epoch_batches(examples: list, batch_size: int, generator: torch.Generator):
    """Endless batches of indices: each epoch visits every example once, in a seeded random order.

    Batches never mix latent sizes (aspect buckets) or text lengths. A group smaller than the batch size
    repeats its own examples to fill the batch; a group's last partial batch is dropped for that epoch.
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


def collate(examples: list, empty=None, dropout: float = 0.0, generator=None):
    """Stacks a batch. With caption ``dropout``, each sample's text is replaced by the empty caption's with
    that probability (the whole batch's if the empty caption's T5 length differs from the batch's)."""
    latents = torch.stack([e.latent for e in examples])
    context = torch.stack([e.context for e in examples])
    pooled = torch.stack([e.pooled for e in examples])
    if dropout > 0 and empty is not None:
        drop = torch.rand(len(examples), generator=generator) < dropout
        if drop.any():
            if empty[0].shape[0] != context.shape[1]:
                drop[:] = True
                context = empty[0][None].repeat(len(examples), 1, 1)
            else:
                context = torch.where(drop[:, None, None], empty[0][None], context)
            pooled = torch.where(drop[:, None], empty[1][None], pooled)
    return latents, context, pooled


def collate_references(examples: list, dropout: float = 0.0, generator=None) -> list:
    """The batch's reference latents, one (B, C, h, w) stack per reference, in order; [] for plain images. With
    probability ``dropout`` a batch trains with fewer: none for one-reference pairs (plain text-to-image too), a random
    subset (perhaps none) of several, kept in their order. Draws from ``generator`` only for paired data (the one
    draw of a one-reference pair, so its runs repeat as they always did)."""
    count = len(examples[0].references)
    if count == 0:
        return []
    keep = list(range(count))
    if dropout > 0 and torch.rand(1, generator=generator).item() < dropout:
        if count == 1:
            return []
        kept = int(torch.randint(0, count, (1,), generator=generator))
        keep = sorted(torch.randperm(count, generator=generator)[:kept].tolist())
    return [torch.stack([e.references[i] for e in examples]) for i in keep]
