"""Flux LoRA Compare Checkpoints node: a run's checkpoints side by side, to pick the best one by its samples."""
import os

from comfy_api.latest import io, ui

from ..trainer.checkpoint import find_run, list_runs
from ..trainer.compare import choose_checkpoints, compare_checkpoints, parse_strengths, run_checkpoints
from .folders import runs_folder
from .live import send_progress_text
from .types import FLUX_SAMPLE_SETTINGS


def _lora_name(path) -> str:
    """The checkpoint as LoraLoader lists it: relative to the loras folder that holds the run folders."""
    return os.path.relpath(path, os.path.dirname(runs_folder())).replace(os.sep, "/")


def _chosen(checkpoints, output_step):
    if output_step == 0:
        return checkpoints[-1]
    found = [c for c in checkpoints if c.step == output_step]
    if not found:
        raise ValueError(f"output_step {output_step} is not one of the compared checkpoints (steps "
                         f"{', '.join(str(c.step) for c in checkpoints)}); 0 outputs the last of them.")
    return found[0]


class CompareCheckpoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FluxLoRA_CompareCheckpoints",
            display_name="Flux LoRA Compare Checkpoints",
            category="FluxLoRA",
            is_output_node=True,
            hidden=[io.Hidden.unique_id],
            description="Renders a run's checkpoints side by side (a row per checkpoint and strength, a column per "
                        "prompt, one seed for all) through ComfyUI's normal sampling, each checkpoint applied as a "
                        "LoRA patch like LoraLoader. Pick the best by its samples, then use its file name.",
            inputs=[
                io.Model.Input("model", tooltip="The model the run trained (the same family and variant; it is not "
                                                "modified)."),
                io.Clip.Input("clip", tooltip="The model's text encoders, to encode the prompts."),
                io.Vae.Input("vae", tooltip="The model's VAE, to decode the samples."),
                io.Combo.Input("run", options=["latest", *list_runs(runs_folder())], default="latest",
                               tooltip="The run folder (loras/fluxlora_runs, newest first; 'latest' = the newest), the "
                                       "same list as Flux LoRA Train's resume. Reload the page to list new runs."),
                FLUX_SAMPLE_SETTINGS.Input("sample_settings",
                                           tooltip="Test Sampler's settings: prompts, size, steps, guidance and seed "
                                                   "of every cell ({trigger}: the run's trigger word)."),
                io.String.Input("checkpoints", default="all",
                                tooltip="Which checkpoints: 'all', 'last 4', or step numbers ('500, 1000, 1500'), "
                                        "one row each. Rendering time grows with rows x prompts."),
                io.String.Input("strengths", default="1.0",
                                tooltip="LoRA strengths (LoraLoader's strength_model), comma separated: '0.75, 1.0' "
                                        "renders each checkpoint at both; 0 adds one row of the model without the "
                                        "LoRA. A slider: '-1, 0, 1'."),
                io.Int.Input("output_step", default=0, min=0, max=1000000,
                             tooltip="Which compared checkpoint the lora_name output names: its step number, or 0 "
                                     "for the last one. Look at the grid, set the step you like and queue again (the "
                                     "grid renders again, with the same seeds and so the same images)."),
            ],
            outputs=[
                io.Image.Output("images", tooltip="The labelled grid: a row per checkpoint (and strength), a column "
                                                  "per prompt."),
                io.AnyType.Output("lora_name", tooltip="The chosen checkpoint's file as LoraLoader lists it: connect "
                                                       "to a LoraLoader's lora_name."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, run="latest", **kwargs):
        """The run's checkpoint files: new checkpoints of a run that is still training (or a newer 'latest' run)
        render again; an unchanged run is not rendered twice."""
        try:
            folder = find_run(runs_folder(), run, "compare")
            return folder.name, tuple((c.step, os.path.getmtime(c.path)) for c in run_checkpoints(folder))
        except (ValueError, OSError):
            return None   # execute says what is wrong

    @classmethod
    def execute(cls, model, clip, vae, run, sample_settings, checkpoints, strengths, output_step) -> io.NodeOutput:
        folder = find_run(runs_folder(), run, "compare")
        chosen = choose_checkpoints(run_checkpoints(folder), checkpoints)
        values = parse_strengths(strengths)
        output = _chosen(chosen, output_step)
        node = cls.hidden.unique_id if cls.hidden is not None else None

        def progress(done, total, label):
            send_progress_text(f"{folder.name}: {label} ({done}/{total})", node)

        grid, labels = compare_checkpoints(model, clip, vae, sample_settings, chosen, values, progress)
        text = (f"{folder.name}: {len(labels)} row(s) x {len(sample_settings.prompts)} prompt(s); "
                f"lora_name: {_lora_name(output.path)} (step {output.step})")
        send_progress_text(text, node)
        return io.NodeOutput(grid, _lora_name(output.path), ui=ui.PreviewImage(grid, cls=cls))
