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


def image_batch(comfy):
    files = images.write_images(comfy["root"] / "input")
    return torch.stack([torch.from_numpy(np.asarray(Image.open(comfy["root"] / "input" / f)).astype(np.float32) / 255)
                        for f in files])


def model_and_examples(comfy, pack):
    dataset = importlib.import_module(f"{pack.__name__}.trainer.examples")
    model, clip, vae = load_models(comfy)
    if "examples" not in _CACHE:
        with torch.inference_mode():
            _CACHE["examples"] = dataset.encode_examples(model, clip, vae, image_batch(comfy), images.CAPTIONS)
    return model, _CACHE["examples"]
