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


def _trainer(module):
    import harness
    return importlib.import_module(f"{harness.loaded_pack().__name__}.trainer.{module}")


def dataset(comfy):
    """The synthetic images and their captions as a FLUX_DATASET."""
    ds = _trainer("dataset")
    return ds.dataset_from_images(image_batch(comfy), images.CAPTIONS)


def model_and_examples(comfy):
    ex = _trainer("examples")
    model, clip, vae = load_models(comfy)
    if "examples" not in _CACHE:
        with torch.inference_mode():
            _CACHE["examples"] = ex.Encoder(model, clip, vae).examples(ex.sources_from_dataset(dataset(comfy)))
    return model, _CACHE["examples"]
