"""What the shared MODEL looks like (modules, attributes, weights, weight functions, options, patches) and a fixed
sample from it: tests compare before and after training to prove training leaves it exactly as it was."""
import torch


def sample(model, clip):
    import nodes
    pos = nodes.CLIPTextEncode().encode(clip, "tok_test a red thing")[0]
    neg = nodes.CLIPTextEncode().encode(clip, "")[0]
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    with torch.inference_mode():
        return nodes.common_ksampler(model, 5, 3, 1.0, "euler", "simple", pos, neg, latent)[0]["samples"]


def snapshot(model):
    dm = model.model.diffusion_model
    return {
        "modules": [(n, type(m).__name__) for n, m in dm.named_modules()],
        "attrs": sorted(vars(dm)),
        "params": {k: v.detach().clone() for k, v in dm.state_dict().items()},
        "weight_functions": sum(len(getattr(m, "weight_function", [])) + len(getattr(m, "bias_function", []))
                                for m in dm.modules()),
        "model_options": repr(model.model_options),
        "patches": len(model.patches),
        "injections": dict(model.injections),
    }


def assert_clean(before, after):
    assert after["modules"] == before["modules"]
    assert after["attrs"] == before["attrs"]
    assert after["weight_functions"] == before["weight_functions"] == 0
    assert after["model_options"] == before["model_options"]
    assert after["patches"] == before["patches"] and after["injections"] == before["injections"]
    assert after["params"].keys() == before["params"].keys()
    for k, v in before["params"].items():
        assert torch.equal(after["params"][k], v), k
