"""API-format graphs built only from stock ComfyUI nodes and this pack."""


BASIC = ("steps", "learning_rate", "rank", "seed")


def train_node(inputs_from: dict, advanced_id: str = None, preset: str = "balanced", **settings):
    """FluxLoRA_Train's inputs: ``settings`` on the train node itself (the basic ones) or through an Advanced
    Settings node ``advanced_id`` (the rest; returned as that node's inputs, or None when there are none)."""
    basic = {"steps": 60, "learning_rate": 5e-3, "rank": 16, "seed": 0}
    basic.update({k: v for k, v in settings.items() if k in BASIC})
    resume = settings.pop("resume", "off")
    advanced = {k: v for k, v in settings.items() if k not in BASIC}
    train = {**inputs_from, "preset": preset, **basic, "resume": resume}
    if advanced:
        train["advanced"] = [advanced_id, 0]
    return train, (advanced or None)


def training_graph(names, image_files, captions, steps=60, prefix="flux_lora/test", fmt="kohya", **train):
    """Stock loaders + LoadImage/ImageBatch -> Dataset from Images -> Flux LoRA Train (+ Advanced Settings) -> Save.
    Caption dropout is off unless given (the tests compare losses)."""
    g = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": names["unet"], "weight_dtype": train.pop("weight_dtype", "default")}},
        "clip": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": names["clip_l"], "clip_name2": names["t5"], "type": "flux"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": names["vae"]}},
    }
    previous = None
    for i, f in enumerate(image_files):
        g[f"img{i}"] = {"class_type": "LoadImage", "inputs": {"image": f}}
        if previous is None:
            previous = [f"img{i}", 0]
        else:
            g[f"batch{i}"] = {"class_type": "ImageBatch", "inputs": {"image1": previous, "image2": [f"img{i}", 0]}}
            previous = [f"batch{i}", 0]
    if previous is not None:
        g["images"] = {"class_type": "FluxLoRA_ImageDataset", "inputs": {"images": previous, "captions": "\n".join(captions)}}
    preset = train.pop("preset", "balanced")
    inputs, advanced = train_node({"model": ["unet", 0], "clip": ["clip", 0], "vae": ["vae", 0], "dataset": ["images", 0]},
                                  "advanced", preset, **{"caption_dropout": 0.0, "steps": steps, **train})
    g["train"] = {"class_type": "FluxLoRA_Train", "inputs": inputs}
    if advanced:
        g["advanced"] = {"class_type": "FluxLoRA_AdvancedSettings", "inputs": advanced_inputs(advanced)}
    g["save"] = {"class_type": "FluxLoRA_SaveLoRA", "inputs": {"lora": ["train", 0], "filename_prefix": prefix,
                                                               "format": fmt, "precision": "fp32", "trigger_word": "tok_test"}}
    return g


def advanced_inputs(values: dict) -> dict:
    """Every widget of the Advanced Settings node: the given values, 'preset' (or -1 / empty) for the rest."""
    import nodes
    schema = nodes.NODE_CLASS_MAPPINGS["FluxLoRA_AdvancedSettings"].define_schema()
    out = {i.id: i.default for i in schema.inputs}
    for name, value in values.items():
        assert name in out, f"not an advanced setting: {name}"
        out[name] = ("on" if value else "off") if isinstance(value, bool) else value
    return out


def add_sampling(g, model_ref, prompt_text="tok_test a red thing", tag="s"):
    g[f"{tag}_pos"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": prompt_text}}
    g[f"{tag}_neg"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": ""}}
    g[f"{tag}_latent"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    g[f"{tag}_k"] = {"class_type": "KSampler", "inputs": {
        "model": model_ref, "seed": 1, "steps": 3, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": [f"{tag}_pos", 0], "negative": [f"{tag}_neg", 0], "latent_image": [f"{tag}_latent", 0], "denoise": 1.0}}
    g[f"{tag}_decode"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"{tag}_k", 0], "vae": ["vae", 0]}}
    g[f"{tag}_out"] = {"class_type": "SaveImage", "inputs": {"images": [f"{tag}_decode", 0], "filename_prefix": tag}}
    return g


def lora_sampling_graph(names, lora_name):
    g = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": names["unet"], "weight_dtype": "default"}},
        "clip": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": names["clip_l"], "clip_name2": names["t5"], "type": "flux"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": names["vae"]}},
        "lora": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["unet", 0], "lora_name": lora_name, "strength_model": 1.0}},
    }
    return add_sampling(g, ["lora", 0], tag="l")


def dataset_graph(names, folder, steps=30, prefix="flux_lora/dataset", trigger="ohwx_style", autocaption=None, **train):
    """DatasetLoader -> [AutoCaption] -> TriggerWord -> FluxLoRATrain -> SaveLoRA."""
    g = training_graph(names, [], [], steps=steps, prefix=prefix, **train)
    g["data"] = {"class_type": "FluxLoRA_DatasetLoader", "inputs": {"folder": folder, "resolution": "512",
                 "crop": "center square 1:1", "caption_extension": ".txt", "small_images": "skip"}}
    source = ["data", 0]
    if autocaption is not None:
        g["caption"] = {"class_type": "FluxLoRA_AutoCaption", "inputs": {"dataset": source, **autocaption}}
        source = ["caption", 0]
    g["trigger"] = {"class_type": "FluxLoRA_TriggerWord", "inputs": {"dataset": source, "trigger": trigger, "mode": "prepend"}}
    g["train"]["inputs"]["dataset"] = ["trigger", 0]
    g["save"]["inputs"]["trigger_word"] = ""
    return g
