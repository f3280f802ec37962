"""FLUX.1-dev's real architecture for planning tests: built on the meta device (no memory, no GPU)."""
import importlib.util
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


def flux_configs():
    """bench/flux_configs.py (the full-size configs) as a module."""
    spec = importlib.util.spec_from_file_location("flux_configs", BENCH / "flux_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flux_dev_facts(memory_plan):
    """The memory plan's facts of FLUX.1-dev as a bf16 load would store it."""
    import comfy.ldm.flux.model
    import comfy.ops
    cfg = {k: v for k, v in flux_configs().FLUX_DEV.items() if k != "image_model"}
    dm = comfy.ldm.flux.model.Flux(operations=comfy.ops.disable_weight_init, dtype=torch.bfloat16, device="meta", **cfg)
    return memory_plan.diffusion_model_facts(dm)
