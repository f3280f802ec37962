"""FluxLoRATrain node: a preset and the few settings most users change; the rest comes from the advanced node."""
from comfy_api.latest import io

from ..trainer.checkpoint import list_runs
from ..trainer.run import train_run
from ..trainer.settings import DEFAULT_PRESET, PRESET_NOTES, PRESETS, TrainSettings, basic_names
from .folders import cache_folder, runs_folder
from .live import NodeRun, run_report, sample_grid, workflow_id
from .settings_widgets import setting_input
from .types import FLUX_DATASET, FLUX_LORA_ADVANCED, FLUX_SAMPLE_SETTINGS, LORA_MODEL, LOSS_MAP, search_aliases

class FluxLoRATrain(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        notes = "; ".join(f"{name}: {note}" for name, note in PRESET_NOTES.items())
        return io.Schema(
            node_id="FluxLoRA_Train",
            display_name="Flux LoRA Train",
            category="FluxLoRA",
            **search_aliases("lora trainer", "train lora flux", "flux lora training", "lora training"),
            is_output_node=True,
            hidden=[io.Hidden.unique_id, io.Hidden.extra_pnginfo],
            description="Trains a FLUX.1 (dev, schnell, Kontext), FLUX.2 [klein]/[dev] or Chroma LoRA on the MODEL ComfyUI already loaded (it is left unchanged). A preset "
                        "fills every setting; 'Flux LoRA Advanced Settings' changes any of them.",
            inputs=[
                io.Model.Input("model", tooltip="FLUX.1-dev (or FLUX.2 klein, Chroma, ...) from 'Load Diffusion Model' "
                                                "(fp8_e4m3fn weight dtype saves VRAM). It is not modified; a trained copy is output."),
                io.Clip.Input("clip", tooltip="The model's text encoders: FLUX.1 DualCLIPLoader (type 'flux'); FLUX.2 "
                                              "CLIPLoader (type 'flux2'); Chroma CLIPLoader (type 'chroma'). Captions are encoded "
                                              "once, then the encoders are moved out of VRAM."),
                io.Vae.Input("vae", tooltip="The model's VAE (ae.safetensors; flux2-vae for FLUX.2). Images are encoded once, then the VAE leaves VRAM."),
                FLUX_DATASET.Input("dataset", tooltip="Training data: Dataset Loader (-> Auto Caption -> Trigger Word), "
                                                      "or 'Flux LoRA Dataset from Images' for an IMAGE batch."),
                io.Combo.Input("preset", options=list(PRESETS), default=DEFAULT_PRESET,
                               tooltip=f"Fills every setting ({notes}). Picking one also sets steps, learning rate and "
                                       "rank here to its values."),
                *[setting_input(name) for name in basic_names()],
                io.Combo.Input("resume", options=["off", "latest", *list_runs(runs_folder())], default="off", optional=True,
                               tooltip="Continue a cancelled or finished run from its last checkpoint (run folders in "
                                       "loras/fluxlora_runs, newest first; 'latest' = the newest). The dataset, model "
                                       "and settings must be the same; raise steps to train a finished run longer."),
                FLUX_SAMPLE_SETTINGS.Input("sample_settings", optional=True,
                                           tooltip="Test Sampler settings: render sample images every N steps during "
                                                   "training (shown on the node as soon as they exist)."),
                FLUX_DATASET.Input("regularization", optional=True,
                                   tooltip="Class images for preservation 'regularization images' (Advanced Settings): "
                                           "a Dataset Loader folder, or 'Flux LoRA Class Images' to render them once "
                                           "with this model."),
                FLUX_LORA_ADVANCED.Input("advanced", optional=True,
                                         tooltip="Flux LoRA Advanced Settings: each setting it does not leave at "
                                                 "'preset' replaces the preset's value."),
            ],
            outputs=[
                LORA_MODEL.Output("lora", tooltip="The trained LoRA: connect to 'Save Flux LoRA'."),
                io.Model.Output("model", tooltip="The input MODEL with the LoRA applied as a normal ComfyUI patch."),
                LOSS_MAP.Output("loss", tooltip="Loss per step ({'loss': [...]}); works with 'Plot Loss Graph'."),
                io.Image.Output("loss_curve", tooltip="Loss (raw and moving average), learning rate and checkpoints."),
                io.Image.Output("sample_grid", tooltip="Test Sampler images of every checkpoint, one row per "
                                                       "checkpoint (a blank image when no Test Sampler is connected)."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, vae, dataset, preset, resume="off", sample_settings=None, regularization=None,
                advanced=None, **basic) -> io.NodeOutput:
        settings = TrainSettings.from_preset(preset, **(advanced or {}), **basic)
        live = NodeRun(cls.hidden.unique_id if cls.hidden is not None else "headless", settings.steps,
                        workflow_id(cls.hidden))
        with live.reporting_errors():
            run = train_run(model, clip, vae, dataset, settings, preset=preset, sample_settings=sample_settings,
                            hooks=live, cache_root=cache_folder(), runs_root=runs_folder(), resume=resume,
                            regularization=regularization)
        live.finish()
        shown = run_report(cls, run)
        shown.update(validation=[list(v) for v in run.lora.info.validation],
                     encoded=[{"images": run.images_encoded, "captions": run.captions_encoded,
                               "cache_hits": run.cache_hits}])
        return io.NodeOutput(run.lora, run.model, {"loss": list(run.lora.losses)}, run.loss_curve, sample_grid(run),
                             ui=shown)
