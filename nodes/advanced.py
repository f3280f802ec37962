"""Flux LoRA Advanced Settings node: every setting the train node does not show, each 'preset' until changed."""
from comfy_api.latest import io

from ..trainer.settings import TrainSettings, advanced_names
from .settings_widgets import overrides_from_widgets, setting_input
from .types import FLUX_LORA_ADVANCED


class AdvancedSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_AdvancedSettings",
            display_name="Flux LoRA Advanced Settings",
            category="FluxLoRA",
            description="Connect to Flux LoRA Train's 'advanced' input. Every setting left at 'preset' (or -1, or "
                        "empty) keeps the value of the preset chosen on the train node; the others replace it.",
            inputs=[setting_input(name, from_preset=True) for name in advanced_names()],
            outputs=[FLUX_LORA_ADVANCED.Output("advanced", tooltip="Connect to Flux LoRA Train's 'advanced' input.")],
        )

    @classmethod
    def execute(cls, **widgets) -> io.NodeOutput:  # only the inputs present: older workflows may lack newer ones
        overrides = overrides_from_widgets(widgets)
        TrainSettings().with_changes(**overrides)  # bad values are reported here, on this node
        return io.NodeOutput(overrides)
