"""Using trained LoRAs with stock nodes: the bundled merge workflow bakes a LoRA into the base model (weights = base +
delta), and two LoRAs stacked in LoraLoader nodes add up, with zero unloaded keys."""
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

import graphs
import harness
import images
import workflow_swaps

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def _train(comfy, seed):
    files = images.write_images(comfy["root"] / "input")
    g = graphs.training_graph(comfy["names"], files, images.CAPTIONS, steps=3, prefix=f"flux_lora/stack_{seed}", seed=seed)
    executor, _ = harness.run(g)
    assert executor.success, harness.error_message(executor)
    name = executor.history_result["outputs"]["save"]["text"][0].split("\n")[0].removeprefix("Saved ")
    return name, load_file(str(comfy["loras"] / name))


def _delta(weights, layer):
    up = weights[f"lora_unet_{layer.replace('.', '_')}.lora_up.weight"]
    down = weights[f"lora_unet_{layer.replace('.', '_')}.lora_down.weight"]
    alpha = float(weights[f"lora_unet_{layer.replace('.', '_')}.alpha"])
    return alpha / down.shape[0] * (up.float() @ down.float())


LAYERS = ["double_blocks.0.img_attn.qkv", "single_blocks.1.linear1", "double_blocks.1.txt_mlp.2"]


def test_merge_workflow_bakes_base_plus_delta(comfy):
    import nodes
    name, weights = _train(comfy, 1)
    api = workflow_swaps.tiny_api(json.loads((WORKFLOWS / "api" / "flux_lora_merge.json").read_text()), "", "")
    api["2"]["inputs"]["lora_name"] = name
    api["3"]["inputs"]["filename_prefix"] = "diffusion_models/merged_test"
    executor, _ = harness.run(api)
    assert executor.success, harness.error_message(executor)
    (merged_file,) = (comfy["root"] / "output" / "diffusion_models").glob("merged_test*.safetensors")
    merged = load_file(str(merged_file))
    base = nodes.UNETLoader().load_unet(comfy["names"]["unet"], "default")[0].model.diffusion_model.state_dict()
    prefix = next(k for k in merged if k.endswith("double_blocks.0.img_attn.qkv.weight"))[:-len("double_blocks.0.img_attn.qkv.weight")]
    for layer in LAYERS:
        torch.testing.assert_close(merged[f"{prefix}{layer}.weight"].float(), base[f"{layer}.weight"].float() + _delta(weights, layer),
                                   rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged[f"{prefix}img_in.weight"].float(), base["img_in.weight"].float())  # untouched layer


def test_two_loras_stack_in_stock_loaders(comfy, caplog):
    import nodes
    from comfy.lora import calculate_weight
    (name_a, a), (name_b, b) = _train(comfy, 1), _train(comfy, 2)
    model = nodes.UNETLoader().load_unet(comfy["names"]["unet"], "default")[0]
    with caplog.at_level(logging.WARNING):
        stacked = nodes.LoraLoaderModelOnly().load_lora_model_only(model, name_a, 1.0)[0]
        stacked = nodes.LoraLoaderModelOnly().load_lora_model_only(stacked, name_b, 0.5)[0]
    assert not [r for r in caplog.records if "lora key not loaded" in r.getMessage()]
    dm = model.model.diffusion_model
    for layer in LAYERS:
        key = f"diffusion_model.{layer}.weight"
        w = dm.get_parameter(f"{layer}.weight").detach().float()
        got = calculate_weight(stacked.patches[key], w.clone(), key)
        torch.testing.assert_close(got, w + _delta(a, layer) + 0.5 * _delta(b, layer), rtol=1e-5, atol=1e-6)
