"""ComfyUI-FluxLoRA: train FLUX.1-dev LoRAs inside ComfyUI, on the MODEL ComfyUI already loaded."""
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import FluxLoRAExtension
    return FluxLoRAExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
