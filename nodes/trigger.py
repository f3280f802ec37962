"""TriggerWord node."""
from dataclasses import replace

from comfy_api.latest import io, ui

from ..trainer.dataset import report
from ..trainer.trigger import TRIGGER_MODES, apply_trigger, token_split, trigger_warnings
from .types import FLUX_DATASET


class TriggerWord(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_TriggerWord",
            display_name="Flux LoRA Trigger Word",
            category="FluxLoRA",
            is_output_node=True,
            description="Puts a unique trigger word into every caption (never twice).",
            inputs=[
                FLUX_DATASET.Input("dataset"),
                io.String.Input("trigger", default="mytoken_style",
                                tooltip="A unique made-up word (e.g. 'mytoken_artstyle'), not a common word or concept."),
                io.Combo.Input("mode", options=list(TRIGGER_MODES), default="prepend",
                               tooltip="prepend: 'trigger, caption'. replace [trigger]: the placeholder '[trigger]' in a "
                                       "caption becomes the trigger; captions without one get it prepended."),
            ],
            outputs=[
                FLUX_DATASET.Output("dataset"),
                io.String.Output("trigger", tooltip="For sample prompts and the saved LoRA's metadata."),
            ],
        )

    @classmethod
    def execute(cls, dataset, trigger, mode) -> io.NodeOutput:
        trigger = trigger.strip()
        if not trigger:
            raise ValueError("TriggerWord: enter a trigger word (a unique made-up word such as 'mytoken_artstyle').")
        images = [replace(im, caption=apply_trigger(im.caption, trigger, mode)) for im in dataset.images]
        clip_tokens, t5_tokens = token_split(trigger)
        warnings = trigger_warnings(trigger)
        notes = dataset.notes + (f"trigger '{trigger}': CLIP-L {len(clip_tokens)} tokens {clip_tokens}, "
                                 f"T5 {len(t5_tokens)} tokens {t5_tokens}",)
        out = dataset.with_images(images, trigger=trigger, warnings=dataset.warnings + tuple(warnings), notes=notes)
        return io.NodeOutput(out, trigger, ui=ui.PreviewText(report(out)))
