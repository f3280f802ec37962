"""An assistant LoRA: a LoRA file applied to the model while training only (never saved into the trained LoRA, never in
checkpoint samples). FLUX.1-schnell needs one — ostris' training adapter, as ai-toolkit requires — so that training
does not undo schnell's few-step distillation."""
import comfy.lora
import comfy.utils
import folder_paths


def with_assistant(model, name: str):
    """A clone of ``model`` (a ComfyUI MODEL) with the LoRA file ``name`` from models/loras applied as ComfyUI weight
    patches at strength 1; the MODEL itself is not changed. Checked before anything is encoded."""
    path = folder_paths.get_full_path("loras", name)
    if path is None:
        found = [f for f in folder_paths.get_filename_list("loras") if "schnell" in f.lower()] or \
            folder_paths.get_filename_list("loras")[:8]
        raise ValueError(f"assistant_lora '{name}' is not in models/loras" + (f" (there: {', '.join(found)})" if found
                                                                             else " (the folder is empty)") + ".")
    patches = comfy.lora.load_lora(comfy.utils.load_torch_file(path, safe_load=True),
                                   comfy.lora.model_lora_keys_unet(model.model, {}))
    if not patches:
        raise ValueError(f"assistant_lora '{name}' has no key that fits this FLUX model (is it a LoRA for another "
                         "model?).")
    clone = model.clone()
    clone.add_patches(patches, 1.0)
    return clone
