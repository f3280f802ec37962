"""AutoCaption node."""
from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ..trainer.caption import (CAPTION_MODES, DEFAULT_QWEN_PROMPT, FLORENCE_TASKS, available, caption_dataset, locate,
                               needs_caption, write_sidecar)
from ..trainer.dataset import report
from .types import FLUX_DATASET


class AutoCaption(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_AutoCaption",
            display_name="Flux LoRA Auto Caption",
            category="FluxLoRA",
            is_output_node=True,
            description="Captions the dataset's images with a vision-language model (Florence-2 or Qwen2.5-VL).",
            inputs=[
                FLUX_DATASET.Input("dataset"),
                io.Combo.Input("model", options=available(folder_paths.get_folder_paths("captioners")),
                               default="Florence-2-large",
                               tooltip="Model folder in models/captioners; a known model missing there is downloaded "
                                       "from the Hugging Face hub on first use. Florence-2: fast, good. Qwen2.5-VL: "
                                       "slower, more precise, follows the prompt."),
                io.Combo.Input("mode", options=list(CAPTION_MODES), default="fill missing",
                               tooltip="fill missing: only images without a caption. overwrite: replace every caption. "
                                       "append: add the generated text after existing captions."),
                io.Combo.Input("florence_task", options=list(FLORENCE_TASKS), default=FLORENCE_TASKS[0],
                               tooltip="Caption length for Florence-2 models (unused by Qwen)."),
                io.String.Input("qwen_prompt", default=DEFAULT_QWEN_PROMPT, multiline=True,
                                tooltip="Instruction for Qwen2.5-VL models (unused by Florence-2)."),
                io.Int.Input("batch_size", default=4, min=1, max=64, tooltip="Images captioned at once."),
                io.Int.Input("max_new_tokens", default=160, min=8, max=1024, tooltip="Longest caption, in tokens."),
                io.Boolean.Input("write_sidecars", default=False,
                                 tooltip="Also write each new caption to a text file next to its image. Existing files "
                                         "are only replaced in overwrite mode."),
            ],
            outputs=[FLUX_DATASET.Output("dataset"), io.String.Output("report")],
        )

    @classmethod
    def execute(cls, dataset, model, mode, florence_task, qwen_prompt, batch_size, max_new_tokens,
                write_sidecars) -> io.NodeOutput:
        path = None
        if any(needs_caption(im.caption, mode) for im in dataset.images):
            path = locate(model, folder_paths.get_folder_paths("captioners"))
        out, generated = caption_dataset(dataset, path, mode, florence_task, qwen_prompt, batch_size, max_new_tokens)
        lines = []
        for i in sorted(generated):
            im = out.images[i]
            lines.append(f"{im.name}: {im.caption}")
            if write_sidecars:
                lines.append("  sidecar " + write_sidecar(Path(dataset.folder) / im.name, dataset.caption_extension,
                                                          im.caption, overwrite=mode == "overwrite"))
        text = f"captioned {len(generated)} of {len(dataset.images)} images with {model} ({mode})\n" + "\n".join(lines)
        text += "\n\n" + report(out)
        return io.NodeOutput(out, text, ui=ui.PreviewText(text))
