"""Working with ComfyUI's model management: what to free, what to ask for, inference tensors."""
import torch

import comfy.model_management as mm
import comfy.utils


def release(*patchers):
    """Unloads these ModelPatchers (e.g. the text encoder and VAE after caching) from ComfyUI's loaded models."""
    wanted = [p for p in patchers if p is not None]
    for i in range(len(mm.current_loaded_models) - 1, -1, -1):
        loaded = mm.current_loaded_models[i]
        if any(loaded.model is p for p in wanted):
            loaded.model_unload()
            mm.current_loaded_models.pop(i)
    mm.soft_empty_cache()


def _on(device: torch.device, tensor: torch.Tensor) -> bool:
    return tensor.device.type == device.type and (device.index is None or tensor.device.index in (None, device.index))


def materialize_inference_params(module: torch.nn.Module, device):
    """Replaces parameters created under ``torch.inference_mode`` (every ComfyUI loader runs in it) with
    ordinary tensors holding the same values, as ComfyUI's own weight patching does. Autograd may not
    save inference tensors for backward, which the input-gradient of every frozen layer needs.

    Only weights resident on the compute device are used as they are; offloaded (lowvram) weights are
    copied to the device on every forward anyway, and may be pinned by ComfyUI, so they are left alone."""
    device = torch.device(device)
    for name, param in list(module.named_parameters()):
        if param.is_inference() and _on(device, param) and not param.is_pinned():
            comfy.utils.set_attr_param(module, name, param.detach().clone())
