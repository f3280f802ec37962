"""Turns the bundled workflows into ones the CPU test machine can run: tiny models, a small folder, few steps."""

TINY_VALUES = {
    "UNETLoader": {"unet_name": "tiny_flux.safetensors", "weight_dtype": "default"},
    "DualCLIPLoader": {"clip_name1": "tiny_clip_l.safetensors", "clip_name2": "tiny_t5.safetensors"},
    "VAELoader": {"vae_name": "tiny_flux_taesd.safetensors"},
    "FluxLoRA_DatasetLoader": {"resolution": "512"},
    "FluxLoRA_AutoCaption": {"model": "tiny-florence2", "max_new_tokens": 12},
    "FluxLoRA_TestSampler": {"width": 256, "height": 256, "steps": 2, "every_n_steps": 2},
    "FluxLoRA_Train": {"steps": 4, "learning_rate": 0.005},
    "FluxLoRA_SliderTrain": {"steps": 4, "learning_rate": 0.005, "images": 2, "resolution": 256},
    "ModelSamplingFlux": {"width": 256, "height": 256},
    "EmptySD3LatentImage": {"width": 256, "height": 256},
    "EmptyFlux2LatentImage": {"width": 256, "height": 256},
    "KSampler": {"steps": 2},
}


def tiny_api(prompt: dict, folder: str, prefix: str) -> dict:
    out = {}
    for node_id, node in prompt.items():
        inputs = dict(node["inputs"])
        for name, value in TINY_VALUES.get(node["class_type"], {}).items():
            if name in inputs and not isinstance(inputs[name], list):
                inputs[name] = value
        if node["class_type"] == "FluxLoRA_DatasetLoader":
            inputs["folder"] = folder
        if node["class_type"] == "FluxLoRA_SaveLoRA":
            inputs["filename_prefix"] = prefix
        out[node_id] = {**node, "inputs": inputs}
    return out
