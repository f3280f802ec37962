"""Tiny FLUX + encoded synthetic examples, loaded through the stock loader nodes (shared by tests)."""
import importlib

import numpy as np
import torch
from PIL import Image

import images

_CACHE = {}


def load_models(comfy):
    import nodes
    if "models" not in _CACHE:
        names = comfy["names"]
        model = nodes.UNETLoader().load_unet(names["unet"], "default")[0]
        vae = nodes.VAELoader().load_vae(names["vae"])[0]
        clip = nodes.DualCLIPLoader().load_clip(names["clip_l"], names["t5"], "flux")[0]
        _CACHE["models"] = (model, clip, vae)
    return _CACHE["models"]


FAMILIES = ("chroma", "klein", "flux2_dev")


def family_available(comfy, family: str) -> bool:
    return family in comfy["names"]["families"]


def load_family(comfy, family: str):
    """(MODEL, CLIP, VAE) of a tiny Chroma / FLUX.2 [klein] / FLUX.2 [dev], through the stock loader nodes."""
    import nodes
    key = f"family:{family}"
    if key not in _CACHE:
        n = comfy["names"]["families"]
        model = nodes.UNETLoader().load_unet(n[family], "default")[0]
        if family == "chroma":
            clip = nodes.CLIPLoader().load_clip(n["t5"], "chroma")[0]
            vae = nodes.VAELoader().load_vae(n["vae"])[0]
        else:
            clip = nodes.CLIPLoader().load_clip(n["qwen3" if family == "klein" else "mistral3"], "flux2")[0]
            vae = nodes.VAELoader().load_vae(n["flux2_vae"])[0]
        _CACHE[key] = (model, clip, vae)
    return _CACHE[key]


def family_examples(comfy, family: str):
    """(MODEL, examples of the synthetic dataset encoded with that family's CLIP and VAE)."""
    ex = _trainer("examples")
    model, clip, vae = load_family(comfy, family)
    key = f"examples:{family}"
    if key not in _CACHE:
        with torch.inference_mode():
            _CACHE[key] = ex.Encoder(model, clip, vae).examples(ex.sources_from_dataset(dataset(comfy)))
    return model, _CACHE[key]


def image_batch(comfy):
    files = images.write_images(comfy["root"] / "input")
    return torch.stack([torch.from_numpy(np.asarray(Image.open(comfy["root"] / "input" / f)).astype(np.float32) / 255)
                        for f in files])


def _trainer(module):
    import harness
    return importlib.import_module(f"{harness.loaded_pack().__name__}.trainer.{module}")


def dataset(comfy):
    """The synthetic images and their captions as a FLUX_DATASET."""
    ds = _trainer("dataset")
    return ds.dataset_from_images(image_batch(comfy), images.CAPTIONS)


def _encoded(comfy, name, make_dataset):
    ex = _trainer("examples")
    model, clip, vae = load_models(comfy)
    if name not in _CACHE:
        with torch.inference_mode():
            _CACHE[name] = ex.Encoder(model, clip, vae).examples(ex.sources_from_dataset(make_dataset(comfy)))
    return model, _CACHE[name]


def model_and_examples(comfy):
    return _encoded(comfy, "examples", dataset)


def paired_dataset(comfy, references: int = 1):
    """The synthetic images as edit pairs: each with ``references`` control images (its mirror image darkened, then
    upside down and brightened, then each other colour channel order)."""
    from dataclasses import replace
    base = dataset(comfy)

    def controls(pixels):
        made = [(pixels.flip(1).float() * 0.6), (pixels.flip(0).float() * 0.5 + 100), pixels[:, :, [2, 0, 1]].float()]
        return tuple(c.clamp(0, 255).to(pixels.dtype) for c in made[:references])
    return base.with_images([replace(im, controls=controls(im.pixels),
                                     control_sha256s=tuple(f"ref{i}-{im.sha256}" for i in range(references))
                                     if references > 1 else ("mirror-" + im.sha256,)) for im in base.images])


def paired_examples(comfy):
    return _encoded(comfy, "paired", paired_dataset)


def family_paired_examples(comfy, family: str, references: int):
    """(MODEL, examples of the synthetic edit pairs with ``references`` controls, encoded with that family's models)."""
    ex = _trainer("examples")
    model, clip, vae = load_family(comfy, family)
    key = f"paired:{family}:{references}"
    if key not in _CACHE:
        with torch.inference_mode():
            _CACHE[key] = ex.Encoder(model, clip, vae).examples(
                ex.sources_from_dataset(paired_dataset(comfy, references)))
    return model, _CACHE[key]


def random_lora(model, layers, seed: int, scale: float, rank: int = 2) -> dict:
    """A seeded random LoRA on ``layers`` of the tiny FLUX, in ComfyUI's keys."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for layer in layers:
        w = model.model.diffusion_model.get_submodule(layer).weight
        sd[f"diffusion_model.{layer}.lora_up.weight"] = torch.randn(w.shape[0], rank, generator=g) * scale
        sd[f"diffusion_model.{layer}.lora_down.weight"] = torch.randn(rank, w.shape[1], generator=g) * scale
    return sd


def assistant_lora(comfy, name="tiny_assistant.safetensors"):
    """A LoRA file for the tiny FLUX in models/loras (3 layers, seeded): an 'assistant' to train with."""
    from safetensors.torch import save_file
    path = comfy["loras"] / name
    if not path.exists():
        layers = ("double_blocks.0.img_attn.qkv", "double_blocks.1.img_mlp.0", "single_blocks.0.linear1")
        save_file(random_lora(load_models(comfy)[0], layers, seed=21, scale=0.2), str(path))
    return name


def sampled_paired_run(core, models, dataset, prompt: str, cache_root: str):
    """A 2-step train_run of an edit dataset with one checkpoint sample of ``prompt``: (its outputs, the (positive,
    negative) conditioning of every comfy.samplers.sample call it made)."""
    import pytest
    samplers = importlib.import_module("comfy.samplers")   # not 'import comfy.samplers': it would shadow the fixture
    model, clip, vae = models
    conds = []
    real = samplers.sample

    def spy(model_, noise, positive, negative, *a, **k):
        conds.append((positive, negative))
        return real(model_, noise, positive, negative, *a, **k)
    sample_settings = core.sampling.SampleSettings((prompt,), width=64, height=64, steps=2, every_n_steps=2)
    with pytest.MonkeyPatch.context() as mp, torch.inference_mode():
        mp.setattr(samplers, "sample", spy)
        out = core.run.train_run(model, clip, vae, dataset, core.settings.TrainSettings(
            steps=2, learning_rate=1e-2, rank=4, caption_dropout=0.0), sample_settings=sample_settings,
            cache_root=cache_root)
    return out, conds
