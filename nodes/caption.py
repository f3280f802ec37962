"""AutoCaption node."""
from pathlib import Path

import folder_paths
from comfy_api.latest import io, ui

from ..trainer.caption import (AUTO, CAPTION_MODES, CAPTION_STYLES, FLORENCE_TASKS, available, caption_dataset,
                               captioner_kind, check_style, choose_captioner, locate, needs_caption, write_sidecar)
from ..trainer.dataset import is_paired, report
from .types import FLUX_DATASET


class AutoCaption(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_AutoCaption",
            display_name="Flux LoRA Auto Caption",
            category="FluxLoRA",
            is_output_node=True,
            description="Captions the dataset's images with a vision-language model (Qwen3-VL, JoyCaption, "
                        "Qwen2.5-VL or Florence-2), as detailed or short captions, tags, or edit instructions.",
            inputs=[
                FLUX_DATASET.Input("dataset"),
                io.Combo.Input("model", options=available(folder_paths.get_folder_paths("captioners")),
                               default=AUTO,
                               tooltip="Model folder in models/captioners; a known model missing there is downloaded "
                                       "from the Hugging Face hub on first use. auto: the largest Qwen3-VL that fits "
                                       "the GPU (8B from 19 GB, 4B from 11 GB, 2B from 6 GB), else Florence-2-large. "
                                       "Qwen3-VL: precise, follows the prompt, compares edit pairs. JoyCaption Beta "
                                       "One: liked for people and styles. Florence-2: fast, generic."),
                io.Combo.Input("mode", options=list(CAPTION_MODES), default="fill missing",
                               tooltip="fill missing: only images without a caption. overwrite: replace every caption. "
                                       "append: add the generated text after existing captions."),
                io.Combo.Input("florence_task", options=list(FLORENCE_TASKS), default=FLORENCE_TASKS[0],
                               tooltip="Florence-2's caption length for caption_style 'detailed' ('short' is "
                                       "<CAPTION>); the chat models use caption_style's prompt instead."),
                io.String.Input("qwen_prompt", default="", multiline=True,
                                tooltip="Your own instruction for the chat models (Qwen3-VL, Qwen2.5-VL, JoyCaption), "
                                        "replacing caption_style's prompt. Empty: caption_style's prompt. Florence-2 "
                                        "takes none."),
                io.Int.Input("batch_size", default=4, min=1, max=64, tooltip="Images captioned at once."),
                io.Int.Input("max_new_tokens", default=160, min=8, max=1024, tooltip="Longest caption, in tokens."),
                io.Boolean.Input("write_sidecars", default=False,
                                 tooltip="Also write each new caption to a text file next to its image. Existing files "
                                         "are only replaced in overwrite mode."),
                io.Combo.Input("caption_style", options=list(CAPTION_STYLES), default="detailed", optional=True,
                               tooltip="detailed: one paragraph. short: one sentence. tags: comma-separated tags "
                                       "(Qwen, JoyCaption). instruction: for edit pairs, the model sees the reference "
                                       "images and the edited image and writes the edit instruction (Qwen3-VL, "
                                       "Qwen2.5-VL)."),
            ],
            outputs=[FLUX_DATASET.Output("dataset"), io.String.Output("report")],
        )

    @classmethod
    def execute(cls, dataset, model, mode, florence_task, qwen_prompt, batch_size, max_new_tokens,
                write_sidecars, caption_style="detailed") -> io.NodeOutput:
        path, note = None, ""
        roots = folder_paths.get_folder_paths("captioners")
        if any(needs_caption(im.caption, mode) for im in dataset.images):
            model = choose_captioner(model, roots)   # every refusal before any loading
            note = check_style(captioner_kind(model, roots), caption_style, is_paired(dataset), qwen_prompt)
            path = locate(model, roots)
        out, generated = caption_dataset(dataset, path, mode, florence_task, qwen_prompt, batch_size, max_new_tokens,
                                         caption_style)
        lines = []
        for i in sorted(generated):
            im = out.images[i]
            lines.append(f"{im.name}: {im.caption}")
            if write_sidecars:
                lines.append("  sidecar " + write_sidecar(Path(dataset.folder) / im.name, dataset.caption_extension,
                                                          im.caption, overwrite=mode == "overwrite"))
        text = (f"captioned {len(generated)} of {len(dataset.images)} images with {model} ({mode}, {caption_style})\n"
                + "\n".join(lines + ([note] if note else [])))
        text += "\n\n" + report(out)
        return io.NodeOutput(out, text, ui=ui.PreviewText(text))
