"""Live training progress for the web UI: websocket events + history and presets routes, so a reloaded page rebuilds
the chart and picking a preset fills the node's widgets.

Events (``PromptServer.send_sync``): ``fluxlora.progress`` {node, step, total, loss, lr, it_s, eta_s} after each
step, ``fluxlora.samples`` {node, step, image: {filename, subfolder, type}} at each checkpoint, ``fluxlora.validation``
{node, step, loss}, ``fluxlora.plan`` {node, text} (the VRAM plan, before encoding), ``fluxlora.warning`` {node, text}
(e.g. a checkpoint that could not be written; training goes on), ``fluxlora.stage`` {node, text} (before the first
step: encoding progress), ``fluxlora.stopped`` {node, text} (Cancel or an error ended the run), ``fluxlora.done`` {node}. GET ``/fluxlora/history`` returns everything sent so far per node; GET ``/fluxlora/presets`` every preset's
settings. Headless runs (no server) simply skip the events.
"""
import logging
import os
import time
from contextlib import contextmanager

import torch

import folder_paths
from comfy_api.latest import ui

from ..trainer.run import RunHooks
from ..trainer.settings import PRESETS, TrainSettings

HISTORY = {}  # node id -> {"total", "steps", "loss", "lr", "validation", "samples", "done"}
MAX_NODES = 16


def _server():
    try:
        import server
    except Exception:
        return None
    return getattr(server.PromptServer, "instance", None)


def _send(event, data):
    instance = _server()
    if instance is not None:
        instance.send_sync(event, data, getattr(instance, "client_id", None))


def send_progress_text(text: str, node):
    """A line of text under the node while it works (ComfyUI's progress-text event, where the server has it)."""
    instance = _server()
    if instance is not None and node is not None and hasattr(instance, "send_progress_text"):
        instance.send_progress_text(text, str(node), getattr(instance, "client_id", None))


def workflow_id(hidden) -> str:
    """The id of the frontend workflow that queued this prompt (ComfyUI hands the workflow to nodes as extra_pnginfo),
    or None (an API prompt, an older frontend without workflow ids)."""
    info = getattr(hidden, "extra_pnginfo", None) if hidden is not None else None
    workflow = info.get("workflow") if isinstance(info, dict) else None
    return str(workflow["id"]) if isinstance(workflow, dict) and workflow.get("id") else None


class LiveRun(RunHooks):
    """One training node's run: records and broadcasts steps and checkpoint samples."""

    def __init__(self, node_id, total: int, workflow=None):
        self.node = str(node_id)
        self.workflow = workflow   # the frontend's workflow id: a chart shows only its own workflow's runs
        self.t0 = time.perf_counter()
        if len(HISTORY) >= MAX_NODES and self.node not in HISTORY:
            HISTORY.pop(next(iter(HISTORY)))
        HISTORY[self.node] = {"total": total, "steps": [], "loss": [], "lr": [], "validation": [], "samples": [],
                              "done": False, **({"workflow": workflow} if workflow else {})}

    def _emit(self, event, **data):
        _send(event, {"node": self.node, **({"workflow": self.workflow} if self.workflow else {}), **data})

    def on_step(self, step, total, loss, lr):
        h = HISTORY[self.node]
        h["steps"].append(step)
        h["loss"].append(float(loss))
        h["lr"].append(float(lr))
        elapsed = time.perf_counter() - self.t0
        it_s = step / elapsed if elapsed > 0 else 0.0
        self._emit("fluxlora.progress", step=step, total=total, loss=float(loss), lr=float(lr), it_s=it_s,
                   eta_s=(total - step) / it_s if it_s > 0 else None)

    def on_plan(self, text):
        HISTORY[self.node]["plan"] = text
        self._emit("fluxlora.plan", text=text)

    def on_stage(self, text):
        HISTORY[self.node]["stage"] = text
        self._emit("fluxlora.stage", text=text)

    def on_saved(self, step, path):
        HISTORY[self.node]["saved"] = {"step": step, "file": os.path.basename(path)}

    def stopped(self, text):
        """The run ended early (Cancel, an error): the chart ends on this line instead of a frozen ETA."""
        HISTORY[self.node]["stopped"] = text
        self._emit("fluxlora.stopped", text=text)

    def on_warning(self, text):
        HISTORY[self.node].setdefault("warnings", []).append(text)
        self._emit("fluxlora.warning", text=text)

    def on_validation(self, step, loss):
        HISTORY[self.node]["validation"].append([step, float(loss)])
        self._emit("fluxlora.validation", step=step, loss=float(loss))

    def on_samples(self, step, grid):
        folder = folder_paths.get_temp_directory()
        os.makedirs(folder, exist_ok=True)
        name = f"fluxlora_{self.node.replace(':', '_')}_{int(self.t0 * 1000)}_{step:06d}.png"
        grid.save(os.path.join(folder, name))
        image = {"filename": name, "subfolder": "", "type": "temp"}
        HISTORY[self.node]["samples"].append({"step": step, "image": image})
        self._emit("fluxlora.samples", step=step, image=image)

    def finish(self):
        HISTORY[self.node]["done"] = True
        self._emit("fluxlora.done")


class NodeRun(LiveRun):
    """A training node's run: live chart events; Cancel keeps the work (the run saves a checkpoint, logged here)."""

    resume_hint = "set resume to latest to continue"   # '' for a node that cannot resume

    def on_interrupt(self, partial):
        steps = partial.info.steps_done
        logging.warning(f"Flux LoRA training interrupted after {steps} steps; the LoRA so far and the training state "
                        f"are in {partial.info.run or 'no run folder'}" + (f" ({self.resume_hint})" if self.resume_hint
                                                                           else ""))
        saved = HISTORY[self.node].get("saved")
        parts = [f"cancelled at step {steps}"] + ([f"saved {saved['file']}"] if saved and saved["step"] == steps else [])
        self.stopped(" · ".join(parts + ([self.resume_hint] if self.resume_hint else [])))

    @contextmanager
    def reporting_errors(self):
        """An error that stops the run ends the chart with its first line (Cancel is told by on_interrupt)."""
        import comfy.model_management as mm
        try:
            yield
        except mm.InterruptProcessingException:
            raise
        except Exception as e:
            steps = HISTORY[self.node]["steps"]
            where = f"at step {steps[-1]}" if steps else "before the first step"
            self.stopped(f"stopped {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            raise


def sample_grid(run):
    """A run's sample grid as the node outputs it (a blank image when no Test Sampler was connected)."""
    return run.sample_grid if run.sample_grid is not None else torch.zeros(1, 64, 64, 3)


def run_report(cls, run) -> dict:
    """What a training node shows and keeps in ComfyUI's history: the loss curve and sample grid, the losses,
    checkpoints, run folder, files saved, warnings and the memory plan."""
    shown = ui.PreviewImage(run.loss_curve, cls=cls).as_dict()
    if run.sample_grid is not None:
        shown["images"] += ui.PreviewImage(run.sample_grid, cls=cls).as_dict()["images"]
    shown.update(loss=[round(v, 6) for v in run.lora.losses], checkpoints=run.checkpoints, run=[run.lora.info.run],
                 saved=[os.path.basename(p) for p in run.saved], warnings=list(run.warnings),
                 memory=[run.plan.describe()] if run.plan is not None else [])
    return shown


def presets_json() -> dict:
    return {name: TrainSettings.from_preset(name).as_dict() for name in PRESETS}


def register_routes():
    """Adds the routes to ComfyUI's server (once; nothing without a server)."""
    instance = _server()
    if instance is None or getattr(register_routes, "done", False):
        return
    from aiohttp import web

    @instance.routes.get("/fluxlora/history")
    async def history(request):
        node = request.rel_url.query.get("node")
        return web.json_response(HISTORY.get(node, {}) if node else HISTORY)

    @instance.routes.get("/fluxlora/presets")
    async def presets(request):
        return web.json_response(presets_json())
    register_routes.done = True
