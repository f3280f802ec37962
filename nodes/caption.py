"""AutoCaption node."""
import os
from pathlib import Path

import comfy.model_management as mm
import comfy.utils
import folder_paths
from comfy_api.latest import io, ui

from ..trainer.caption import (CAPTION_MODES, DEFAULT_QWEN_PROMPT, FLORENCE_TASKS, Captioner, available, locate,
                               merge_caption, needs_caption, write_sidecar)
from ..trainer.dataset import report
from .types import FLUX_DATASET

if "captioners" not in folder_paths.folder_names_and_paths:  # models/captioners/<model folder>
    folder_paths.folder_names_and_paths["captioners"] = ([os.path.join(folder_paths.models_dir, "captioners")], set())


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*.safetensors"))


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
        todo = [i for i, im in enumerate(dataset.images) if needs_caption(im.caption, mode)]
        generated = {}
        if todo:
            path = locate(model, folder_paths.get_folder_paths("captioners"))
            device = mm.get_torch_device()
            mm.free_memory(_folder_bytes(path) * 1.3 + 1024 ** 3, device)  # make room: unload other models if needed
            progress = comfy.utils.ProgressBar(len(todo))
            with Captioner(path, device) as captioner:
                for start in range(0, len(todo), batch_size):
                    mm.throw_exception_if_processing_interrupted()
                    batch = todo[start:start + batch_size]
                    texts = captioner.caption([dataset.images[i].pixels for i in batch], florence_task, qwen_prompt,
                                              max_new_tokens)
                    generated.update(zip(batch, texts))
                    progress.update(len(batch))
            mm.soft_empty_cache()
        images, lines = [], []
        for i, im in enumerate(dataset.images):
            if i not in generated:
                images.append(im)
                continue
            caption, _ = merge_caption(im.caption, generated[i], mode)
            source = "auto" if not im.caption or mode == "overwrite" else im.caption_source + "+auto"
            images.append(type(im)(im.name, im.sha256, im.pixels, caption, source))
            lines.append(f"{im.name}: {caption}")
            if write_sidecars:
                lines.append("  sidecar " + write_sidecar(Path(dataset.folder) / im.name, dataset.caption_extension,
                                                          caption, overwrite=mode == "overwrite"))
        out = dataset.with_images(images)
        text = f"captioned {len(generated)} of {len(dataset.images)} images with {model} ({mode})\n" + "\n".join(lines)
        text += "\n\n" + report(out)
        return io.NodeOutput(out, text, ui=ui.PreviewText(text))
