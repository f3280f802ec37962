"""SaveLoRA node: writes the trained LoRA into ComfyUI's loras folder."""
from comfy_api.latest import io, ui

from ..trainer.export import FORMATS, PRECISIONS, save_to_loras
from ..trainer.result import TrainedLoRA
from .types import LORA_MODEL


class SaveLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_SaveLoRA",
            display_name="Save Flux LoRA",
            category="FluxLoRA",
            is_output_node=True,
            description="Saves a trained LoRA into models/loras, where LoraLoader finds it at once. Never overwrites.",
            inputs=[
                LORA_MODEL.Input("lora", tooltip="The LoRA from 'Flux LoRA Train'."),
                io.String.Input("filename_prefix", default="flux_lora/my_lora",
                                tooltip="Name inside the loras folder (subfolders allowed). The file becomes "
                                        "<prefix>_<steps>steps_<counter>.safetensors; an existing file is never overwritten."),
                io.Combo.Input("format", options=list(FORMATS), default="kohya",
                               tooltip="kohya: lora_unet_* keys (ComfyUI, Forge, A1111, kohya). diffusers: PEFT "
                                       "transformer.* keys (diffusers FluxPipeline.load_lora_weights, ai-toolkit style)."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="bf16",
                               tooltip="Storage precision; bf16 halves the file size of fp32 with no visible difference."),
                io.String.Input("trigger_word", default="", optional=True,
                                tooltip="Recorded in the file's metadata (ss_trigger_word, modelspec.trigger_phrase). Empty: the "
                                        "Trigger Word node's word, if the LoRA was trained on such a dataset."),
            ],
            outputs=[io.AnyType.Output("lora_name", tooltip="The saved file as LoraLoader lists it: connect to a "
                                                          "LoraLoader's lora_name to use it in the same run.")],
        )

    @classmethod
    def execute(cls, lora, filename_prefix, format, precision, trigger_word="") -> io.NodeOutput:
        if not isinstance(lora, TrainedLoRA):
            raise ValueError("This LORA_MODEL was not made by 'Flux LoRA Train' (it has no training information); "
                             "use ComfyUI's own 'Save LoRA Weights' node for it.")
        name, size = save_to_loras(lora, filename_prefix, format, precision, trigger_word.strip())
        return io.NodeOutput(name, ui=ui.PreviewText(f"Saved {name}\n({format}, {precision}, {size / 1e6:.1f} MB)"))
