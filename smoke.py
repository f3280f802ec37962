"""Does the Flux LoRA Trainer work in this ComfyUI? One command answers it before any model is downloaded.

    python smoke.py [--gpu | --cpu] [--keep] [--comfyui PATH] [--verbose]

Run it with ComfyUI's Python, from the pack's folder (<ComfyUI>/custom_nodes/<pack>/); ComfyUI is found two folders
up, or at --comfyui. In a temporary folder it builds tiny models of the real FLUX.1 / CLIP-L + T5 / VAE architectures
(nothing is downloaded, nothing is written into your model, input, output or user folders), starts ComfyUI headless
in this process with the pack loaded by ComfyUI's own custom-node loader, runs the bundled default workflow
(workflows/api/flux_lora_trainer.json) on them through ComfyUI's executor (a few steps, checkpoint samples), loads the
trained LoRA with the stock LoraLoaderModelOnly and samples with it, and prints the verdict. About a minute on a
laptop CPU. With --gpu (the default where CUDA is available) it runs on the GPU and also prints what the memory plan
would choose for full-size FLUX.1-dev on this card. The temporary folder is removed at the end unless --keep.
Exit status: 0 passed, 1 failed (with what failed and one line to report).
"""
import argparse
import asyncio
import gc
import importlib
import importlib.util
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

_START = time.perf_counter()   # the verdict's seconds count from here
# not resolved: run through a symlink in <ComfyUI>/custom_nodes (python custom_nodes/<link>/smoke.py), smoke.py finds
# that ComfyUI two folders up, not the one beside the link's target
PACK_DIR = Path(os.path.abspath(__file__)).parent
PHOTOS = "fluxlora_smoke_photos"     # the photo set's folder, in the temporary ComfyUI input folder
UNLOADED = ("lora key not loaded", "NOT LOADED")   # what ComfyUI logs for a LoRA key it cannot apply


class Failed(Exception):
    """A check that did not pass: ``stage`` is what was being done, the message what went wrong. ``show_log``: the
    last lines of ComfyUI's log help (not for a setup problem the message already names)."""

    def __init__(self, stage: str, message: str, show_log: bool = True):
        super().__init__(message)
        self.stage = stage
        self.show_log = show_log


class LogRecorder(logging.Handler):
    """Keeps every log record of the run (ComfyUI's and the pack's), to count unloaded LoRA keys and to show the
    last lines when something fails; prints them as they come only with --verbose."""

    def __init__(self, echo: bool):
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))   # with a logged exception's traceback
        self.records = []
        self.echo = echo

    def emit(self, record):
        self.records.append(record)
        if self.echo:
            seconds = time.perf_counter() - _START
            print(f"  | {seconds:5.1f} s {self.format(record)}", flush=True)

    def count(self, needles) -> int:
        return sum(1 for r in self.records if any(n in r.getMessage() for n in needles))

    def tail(self, n: int = 15) -> list:
        return [self.format(r) for r in self.records[-n:]]


# ---------------------------------------------------------------- finding and starting ComfyUI

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--gpu", action="store_true", help="run on the GPU (the default where CUDA is available)")
    where.add_argument("--cpu", action="store_true", help="run on the CPU even where a GPU is available")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (models, photos, LoRA, samples)")
    parser.add_argument("--comfyui", type=Path, metavar="PATH", help="the ComfyUI folder (default: two folders above this pack)")
    parser.add_argument("--verbose", action="store_true", help="print ComfyUI's log while it runs")
    return parser.parse_args(argv)


def find_comfyui(given) -> Path:
    """The ComfyUI folder: --comfyui, else the one this pack is installed in (<ComfyUI>/custom_nodes/<pack>)."""
    root = Path(given).expanduser().resolve() if given else PACK_DIR.parent.parent
    if not ((root / "comfy" / "model_patcher.py").is_file() and (root / "execution.py").is_file()):
        how = ("--comfyui does not point at a ComfyUI folder" if given else
               f"this pack is not inside <ComfyUI>/custom_nodes/ ({PACK_DIR})")
        raise Failed("finding ComfyUI", f"No ComfyUI at {root}: {how}. Run smoke.py from the pack's folder in "
                                        "ComfyUI's custom_nodes, or pass --comfyui <your ComfyUI folder>.",
                     show_log=False)
    return root


def comfyui_version(root: Path) -> str:
    match = re.search(r'__version__\s*=\s*"([^"]+)"', _read(root / "comfyui_version.py"))
    return match.group(1) if match else "unknown"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _pack_metadata(key: str) -> str:
    """A ``key = "value"`` line of the pack's pyproject.toml (version, Issues), without a TOML parser (Python 3.10)."""
    match = re.search(rf'^{key}\s*=\s*"([^"]*)"', _read(PACK_DIR / "pyproject.toml"), re.M)
    return match.group(1) if match else "unknown"


def use_gpu(args) -> bool:
    """--gpu / --cpu, else the GPU where CUDA is available (decided before ComfyUI picks its device)."""
    import torch
    if args.cpu:
        return False
    if not args.gpu:
        return torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    if not (torch.cuda.is_available() or (mps and mps.is_available()) or (xpu and xpu.is_available())):
        raise Failed("starting ComfyUI", f"--gpu was given, but this PyTorch ({torch.__version__}) finds no GPU; "
                                         "run with --cpu, or install the PyTorch build for your GPU", show_log=False)
    return True


def boot_comfyui(root: Path, gpu: bool):
    """Imports ComfyUI from ``root`` into this process as its main.py would for a headless run: on the CPU unless
    ``gpu``, with PyTorch's attention (what the tests train with). A missing torchvision / torchaudio, which ComfyUI
    imports at start-up, is named with the command that installs it."""
    # `python smoke.py` puts the pack's own folder first on sys.path: its nodes/ package would shadow ComfyUI's nodes.py
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PACK_DIR.resolve()]
    sys.path.insert(0, str(root))
    try:
        from comfy.cli_args import args
        args.cpu = not gpu
        args.use_pytorch_cross_attention = True
        import utils.extra_config  # noqa: F401  (ComfyUI's own 'utils' package, before nodes.py shadows the name)
        import comfy.model_management  # noqa: F401
        import comfy.utils
        import execution  # noqa: F401
        import nodes  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("torchvision", "torchaudio"):
            package = e.name.split(".")[0]
            raise Failed("starting ComfyUI", f"ComfyUI imports {package} at start-up and it is not installed in this "
                                             f"Python ({sys.executable}). Install the build matching your torch, e.g. "
                                             f"'{sys.executable} -m pip install {package}', or run smoke.py with the "
                                             "Python that runs your ComfyUI.", show_log=False) from e
        raise Failed("starting ComfyUI", f"ComfyUI at {root} does not import in this Python ({sys.executable}): "
                                         f"{e}. Run smoke.py with the Python that runs your ComfyUI.") from e
    comfy.utils.PROGRESS_BAR_ENABLED = False   # no sampler progress bars between the lines of the verdict


def selftest_package():
    """The pack's selftest/ package (tiny models, photo set, workflow, FLUX.1-dev plan), imported by its path: the
    pack's folder may be called anything, and it must not go on sys.path (see boot_comfyui)."""
    init = PACK_DIR / "selftest" / "__init__.py"
    spec = importlib.util.spec_from_file_location("fluxlora_selftest", init,
                                                  submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the temporary ComfyUI

def use_temporary_folders(work: Path):
    """Points every folder ComfyUI and the pack write to (models, input, output, temp, user) into ``work``, first in
    each list, so that nothing of the user's is written to."""
    import folder_paths
    for kind in ("diffusion_models", "vae", "text_encoders", "loras"):
        (work / "models" / kind).mkdir(parents=True, exist_ok=True)
        folder_paths.add_model_folder_path(kind, str(work / "models" / kind), is_default=True)
    if "datasets" in folder_paths.folder_names_and_paths:  # ComfyUI >= 0.30 has a datasets folder
        (work / "datasets").mkdir(parents=True, exist_ok=True)
        folder_paths.add_model_folder_path("datasets", str(work / "datasets"), is_default=True)
    for sub, setter in (("output", folder_paths.set_output_directory), ("temp", folder_paths.set_temp_directory),
                        ("input", folder_paths.set_input_directory), ("user", folder_paths.set_user_directory)):
        (work / sub).mkdir(parents=True, exist_ok=True)
        setter(str(work / sub))
    for kind in ("loras", "diffusion_models"):  # as ComfyUI's main.py does: trained files in output/ are listed too
        folder_paths.add_model_folder_path(kind, str(work / "output" / kind))


def load_nodes(needed: set) -> str:
    """ComfyUI's built-in nodes, then this pack through ComfyUI's custom-node loader from its real folder; returns the
    pack's module name (the copy ComfyUI runs)."""
    import nodes
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    if not asyncio.run(nodes.load_custom_node(str(PACK_DIR))) or "FluxLoRA_Train" not in nodes.NODE_CLASS_MAPPINGS:
        raise Failed("loading the pack", f"ComfyUI's custom-node loader could not import the pack from {PACK_DIR} "
                                         "(its error is in the log above); run pip install -r requirements.txt "
                                         "with ComfyUI's Python")
    missing = sorted(needed - set(nodes.NODE_CLASS_MAPPINGS))
    if missing:
        raise Failed("loading the pack", f"this ComfyUI lacks nodes the bundled workflow uses: {', '.join(missing)} "
                                         "(an import error in the log above, or a ComfyUI older than 0.8.0)")
    return nodes.NODE_CLASS_MAPPINGS["FluxLoRA_Train"].__module__.rsplit(".", 2)[0]   # <pack>.nodes.train


def execute(prompt: dict):
    """Validates and runs an API prompt through ComfyUI's own PromptExecutor, as its queue would; returns it."""
    headless = importlib.import_module(f"{selftest_package().__name__}.executor")
    prompt_id, valid = headless.validate(prompt)
    if not valid[0] or valid[3]:
        raise Failed("running the bundled workflow", f"ComfyUI refused the workflow: {valid[1]} {valid[3]}")
    executor = headless.run_validated(prompt, prompt_id, valid[2])
    if not executor.success:
        error = next((d for e, d in executor.status_messages if e == "execution_error"), {})
        where = f"node {error.get('node_id')} ({error.get('node_type')})" if error else "the executor"
        raise Failed("running the bundled workflow", f"{where} failed: {error.get('exception_message', 'see the log')}")
    return executor


# ---------------------------------------------------------------- the checks

def saved_lora(outputs: dict, save_id: str) -> Path:
    """The LoRA file the workflow's Save Flux LoRA node wrote (its text says 'Saved <name>')."""
    import folder_paths
    text = (outputs.get(save_id, {}).get("text") or [""])[0]
    name = text.splitlines()[0].removeprefix("Saved ").strip() if text.startswith("Saved ") else ""
    path = folder_paths.get_full_path("loras", name) if name else None
    if not path:
        raise Failed("checking the LoRA file", f"Save Flux LoRA reported no file: {text!r}")
    return Path(path)


def lora_tensor_count(path: Path) -> int:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return len(list(f.keys()))


def sample(outputs: dict, save_id: str):
    """The image a SaveImage node of the run wrote, as an array of 0-255 values."""
    import folder_paths
    import numpy as np
    from PIL import Image
    images = outputs.get(save_id, {}).get("images") or []
    if not images:
        raise Failed("sampling with the LoRA", f"node {save_id} (SaveImage) saved no image")
    image = images[0]
    path = Path(folder_paths.get_output_directory()) / image.get("subfolder", "") / image["filename"]
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32)


def check_run(outputs: dict, recorder: LogRecorder, ids: dict, steps: int, every: int) -> dict:
    """Every promise of the verdict, checked: the trainer's checkpoint samples, a LoRA file, no key left unloaded by
    LoraLoaderModelOnly, and a sample that differs from the same sampling without the LoRA."""
    expected = list(range(every, steps + 1, every))
    checkpoints = outputs.get(ids["train"], {}).get("checkpoints")
    if checkpoints != expected:
        raise Failed("training", f"checkpoint samples at steps {checkpoints}, expected {expected}")
    lora = saved_lora(outputs, ids["save"])
    tensors = lora_tensor_count(lora)
    if not tensors:
        raise Failed("checking the LoRA file", f"{lora.name} holds no tensors")
    unloaded = recorder.count(UNLOADED)
    if unloaded:
        raise Failed("loading the LoRA", f"LoraLoaderModelOnly left {unloaded} keys of {lora.name} unloaded "
                                         "('lora key not loaded' in the log)")
    difference = float(abs(sample(outputs, ids["with_lora"]) - sample(outputs, ids["without_lora"])).mean())
    if difference == 0.0:
        raise Failed("sampling with the LoRA", "the sample with the LoRA is identical to the one without it: the "
                                               "trained LoRA has no effect")
    return {"lora": lora, "tensors": tensors, "checkpoints": checkpoints, "difference": difference}


def plan_lines(pack_module: str, selftest, workflow: dict) -> list:
    """What the memory plan would choose for full-size FLUX.1-dev on this card, for the bundled workflow's settings."""
    import comfy.model_management as mm

    def trainer(name):
        return importlib.import_module(f"{pack_module}.trainer.{name}")
    full_size = importlib.import_module(f"{selftest.__name__}.full_size")
    preset, rank, resolution = importlib.import_module(f"{selftest.__name__}.workflow").default_training(workflow)
    settings = trainer("settings").TrainSettings.from_preset(preset, rank=rank)
    device = mm.get_torch_device()
    available, free_ram = trainer("memory_plan").available_memory(device)
    head = (f"FLUX.1-dev on this card ({mm.get_torch_device_name(device)}: {available / 1024 ** 3:.1f} GiB for "
            f"training, {free_ram / 1024 ** 3:.1f} GiB free RAM), the bundled workflow's settings ({preset} preset, "
            f"rank {rank}, {resolution} px):")
    plans = full_size.flux_dev_lines(trainer, settings, resolution, available, free_ram)
    return [head] + ["  " + line for line in plans]


# ---------------------------------------------------------------- the run

def stage(text: str):
    """One line per step of the run, with the seconds since the start, so a slow machine shows where it is."""
    print(f"- {time.perf_counter() - _START:5.1f} s  {text}", flush=True)


def run(args, work: Path, recorder: LogRecorder, facts: dict) -> list:
    """The whole self-test in ``work``; returns the verdict's lines. Raises Failed."""
    root = find_comfyui(args.comfyui)
    facts["comfyui"] = comfyui_version(root)
    gpu = use_gpu(args)
    stage(f"starting ComfyUI {facts['comfyui']} ({root}) headless, on the {'GPU' if gpu else 'CPU'}")
    boot_comfyui(root, gpu)
    import comfy.model_management as mm
    facts["device"] = mm.get_torch_device_name(mm.get_torch_device())
    selftest = selftest_package()
    importlib.import_module(f"{selftest.__name__}.workflow")
    use_temporary_folders(work)
    prompt, ids = selftest.workflow.smoke_prompt(PHOTOS)
    stage("loading the pack with ComfyUI's custom-node loader")
    pack_module = load_nodes({n["class_type"] for n in prompt.values()})
    stage("building tiny FLUX.1 / CLIP-L + T5 / VAE models and a photo set (nothing is downloaded)")
    tiny = importlib.import_module(f"{selftest.__name__}.tiny_models")
    tiny.write_model_files(work / "models")
    tiny.install_loader_shims()
    importlib.import_module(f"{selftest.__name__}.photos").write_photo_set(work / "input" / PHOTOS)
    steps, every = selftest.workflow.STEPS, selftest.workflow.SAMPLE_EVERY
    workflow = selftest.workflow.DEFAULT_WORKFLOW.relative_to(selftest.PACK_DIR)
    stage(f"running {workflow} on them: {steps} training steps with checkpoint samples, LoraLoaderModelOnly, KSampler")
    outputs = execute(prompt).history_result["outputs"]
    result = check_run(outputs, recorder, ids, steps, every)
    lines = [f"LoRA written: {result['lora']}",
             f"loads in LoraLoader with 0 unloaded keys ({result['tensors']} tensors)",
             f"sample changed by the LoRA (mean difference {result['difference']:.2f} of 255 per pixel value), "
             f"checkpoint samples at steps {', '.join(map(str, result['checkpoints']))}"]
    if gpu:
        stage("planning full-size FLUX.1-dev for this card")
        lines += plan_lines(pack_module, selftest, selftest.workflow.default_workflow())
    return lines


def release(work: Path, keep: bool) -> str:
    """Frees what ComfyUI holds of the temporary files (Windows cannot delete a file still mapped) and removes the
    folder; returns what happened, for the verdict."""
    if keep:
        return f"temporary folder kept (--keep): {work}"
    try:
        import comfy.model_management as mm
        mm.unload_all_models()
        mm.soft_empty_cache()
    except Exception:   # ComfyUI never started: nothing of it to free
        pass
    gc.collect()
    try:
        shutil.rmtree(work)
    except OSError as e:
        return f"could not remove the temporary folder {work} ({e}); delete it by hand"
    return f"temporary folder removed: {work}"


def _colour(text: str, code: str) -> str:
    return f"\033[{code}m{text}\033[0m" if sys.stdout.isatty() else text


def main(argv=None) -> int:
    args = parse_args(argv)
    recorder = LogRecorder(echo=args.verbose)
    logging.getLogger().addHandler(recorder)   # before ComfyUI's imports: its log goes here, not to the terminal
    logging.getLogger().setLevel(logging.INFO)
    logging.captureWarnings(True)
    work = Path(tempfile.mkdtemp(prefix="fluxlora_smoke_"))
    facts = {"comfyui": "unknown", "device": "not started"}
    pack = _pack_metadata("version")
    print(f"Flux LoRA Trainer {pack}: smoke test in {work}", flush=True)
    try:
        lines = run(args, work, recorder, facts)
        failure = None
    except Failed as e:
        lines, failure = [], e
    except Exception as e:   # a bug or an unexpected environment: still one verdict and one line to report
        frame = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        lines, failure = [], Failed("running", f"{type(e).__name__}: {e} (at {where})")
        logging.exception("smoke test")
    seconds = time.perf_counter() - _START
    cleanup = release(work, args.keep)
    versions = f"ComfyUI {facts['comfyui']}, Python {platform.python_version()}, torch {_torch_version()}"
    if failure is None:
        print(_colour("PASSED", "1;32") + f": Flux LoRA Trainer {pack} works in this ComfyUI.")
        for line in [versions, f"device: {facts['device']}", f"took {seconds:.1f} s"] + lines + [cleanup]:
            print(f"  {line}")
        return 0
    print(_colour("FAILED", "1;31") + f" while {failure.stage}: {failure}")
    if failure.show_log and recorder.records and not args.verbose:
        print("  last log lines:\n" + "\n".join(f"    {line}" for line in recorder.tail()))
    print(f"  {cleanup}")
    issues = _pack_metadata("Issues")
    where = f" at {issues}" if issues.startswith("https://") and "REPLACE-WITH" not in issues else ""
    print(f"Report this line{where} (run with --verbose for the whole log):")
    message = " ".join(str(failure).split())[:400]
    print(f"  fluxlora-smoke {pack} FAILED [{failure.stage}] {versions}, {facts['device']}, "
          f"{platform.system()} {platform.machine()}: {message}")
    return 1


def _torch_version() -> str:
    torch = sys.modules.get("torch")
    return getattr(torch, "__version__", "not imported")


if __name__ == "__main__":
    sys.exit(main())
