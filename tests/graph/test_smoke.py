"""smoke.py, the one command a new user runs after installing: run as a user runs it (ComfyUI's Python, from the pack's
folder in <ComfyUI>/custom_nodes, as a separate process) against the ComfyUI under test, it trains and samples with
the bundled default workflow on the tiny models, prints the verdict and leaves nothing behind; a setup it cannot run
in is named with one line to report; and the full-size FLUX.1-dev memory plan it prints on a GPU says what each card
needs."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import comfy_env
import full_size

PACK = comfy_env.PACK_DIR


def _comfy_version(root: Path) -> str:
    return re.search(r'__version__\s*=\s*"([^"]+)"', (root / "comfyui_version.py").read_text()).group(1)


def _not_shipped() -> set:
    """Top-level names the Registry archive leaves out (.comfyignore), and git's own folder."""
    lines = (PACK / ".comfyignore").read_text().splitlines()
    return {line.strip().strip("/") for line in lines if line.strip() and not line.startswith("#")} | {".git"}


def _installed_layout(tmp_path: Path) -> Path:
    """A ComfyUI folder as a user has it: every top-level entry of the ComfyUI under test linked in, and in its
    custom_nodes, under the Registry's name, a copy of what the pack ships (no tests/, no bench/): smoke.py finds
    ComfyUI two folders above itself and needs nothing that stays behind. Returns the pack's folder there."""
    real = comfy_env.find_comfyui()
    root = tmp_path / "ComfyUI"
    (root / "custom_nodes").mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name != "custom_nodes":
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    pack = root / "custom_nodes" / "comfyui-fluxlora"
    pack.mkdir()
    skip = _not_shipped() | {"docs"}   # docs/: the README's images
    for entry in PACK.iterdir():
        if entry.name in skip:
            continue
        if entry.is_dir():
            shutil.copytree(entry, pack / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(entry, pack / entry.name)
    return pack


def _smoke(pack_dir: Path, tmp: Path, *args, shims=True, timeout=400):
    """Runs ``pack_dir/smoke.py`` as a user would (ComfyUI's Python, from the pack's folder), its temporary files in
    ``tmp``. ``shims``: tests only, the stubs of tests/support/shims for a torchvision / torchaudio that this test
    machine cannot import (a user's ComfyUI has both)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COMFYUI_PATH", "PYTHONPATH")}
    env["TMPDIR"] = str(tmp)
    if shims and str(comfy_env.SHIMS) in sys.path:
        env["PYTHONPATH"] = str(comfy_env.SHIMS)
    return subprocess.run([sys.executable, "smoke.py", *args], cwd=pack_dir, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _user_folders(root: Path) -> dict:
    """Every file in the ComfyUI's own models / input / output / user / temp folders, with its size and mtime."""
    found = {}
    for sub in ("models", "input", "output", "user", "temp"):
        for path in (root / sub).rglob("*") if (root / sub).is_dir() else []:
            if path.is_file():
                found[str(path)] = (path.stat().st_size, path.stat().st_mtime_ns)
    return found


def test_smoke_trains_samples_and_cleans_up(tmp_path):
    pack = _installed_layout(tmp_path / "install")
    real = comfy_env.find_comfyui()
    before = _user_folders(real)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = _smoke(pack, tmp, "--cpu")
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    verdict = done.stdout[done.stdout.index("PASSED"):]
    assert f"starting ComfyUI {_comfy_version(real)} ({pack.parent.parent})" in done.stdout, said   # found by its place
    assert f"ComfyUI {_comfy_version(real)}," in verdict and "device: cpu" in verdict, said
    seconds = float(re.search(r"took ([\d.]+) s", verdict).group(1))
    assert seconds > 0, said   # timed, and said (speed is not a test: CI shares its CPU)
    lora = Path(re.search(r"LoRA written: (\S+\.safetensors)", verdict).group(1))
    assert lora.is_relative_to(tmp) and "loras" in lora.parts, said
    assert re.search(r"loads in LoraLoader with 0 unloaded keys \((\d+) tensors\)", verdict), said
    assert "sample changed by the LoRA" in verdict and "checkpoint samples at steps 2, 4" in verdict, said
    work = Path(re.search(r"temporary folder removed: (\S+)", verdict).group(1))
    assert work.parent == tmp and not work.exists() and list(tmp.iterdir()) == [], said
    assert "FLUX.1-dev" not in verdict   # the full-size plan is printed on a GPU only
    assert _user_folders(real) == before  # nothing written into the ComfyUI's own folders


def test_smoke_names_a_missing_comfyui_with_one_line_to_report(tmp_path):
    done = _smoke(PACK, tmp_path, "--comfyui", str(tmp_path / "nowhere"), "--cpu", timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED while finding ComfyUI" in done.stdout and "--comfyui" in done.stdout
    report = done.stdout.splitlines()[done.stdout.splitlines().index(next(
        line for line in done.stdout.splitlines() if line.startswith("Report this line"))) + 1]
    assert report.strip().startswith("fluxlora-smoke ") and "FAILED [finding ComfyUI]" in report
    assert list(tmp_path.iterdir()) == []   # its temporary folder is removed on a failure too


def test_smoke_says_what_is_missing_without_torchvision(tmp_path):
    if str(comfy_env.SHIMS) not in sys.path:
        pytest.skip("torchvision and torchaudio import here: nothing is missing")
    done = _smoke(PACK, tmp_path, "--comfyui", str(comfy_env.find_comfyui()), "--cpu", shims=False, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED while starting ComfyUI: ComfyUI imports torchvision at start-up" in done.stdout, done.stdout
    assert "-m pip install torchvision" in done.stdout


def _selftest(name):
    import tiny_models  # noqa: F401  (it loads the pack's selftest package as fluxlora_selftest)
    return importlib.import_module(f"fluxlora_selftest.{name}")


def test_the_pack_plans_the_real_flux1_dev(core):
    """The pack's own copy of FLUX.1-dev's config (bench/ does not ship) is the benches' one."""
    assert _selftest("full_size").FLUX_DEV == full_size.flux_configs().FLUX_DEV


@pytest.mark.parametrize("card_gib,bf16,fp8", [(80, "fits as loaded", "fits as loaded"),
                                               (24, "needs fp8 base weights", "fits as loaded"),
                                               (12, "needs nf4 base weights", "needs nf4 base weights"),
                                               (8, "needs streaming", "needs streaming")])
def test_flux1_dev_plan_per_card(core, card_gib, bf16, fp8):
    """What a user with that card reads before downloading FLUX.1-dev (the bundled workflow's settings: balanced,
    rank 16, 1024 px), as the train node's plan would decide it."""
    settings = core.settings.TrainSettings.from_preset("balanced", rank=16)
    lines = _selftest("full_size").flux_dev_lines(lambda name: getattr(core, name), settings, 1024,
                                                  available=card_gib * 1024 ** 3, free_ram=64 * 1024 ** 3)
    verdicts = [line for line in lines if line.startswith("FLUX.1-dev")]
    assert len(verdicts) == 2 and len(lines) == 4, lines
    assert verdicts[0].startswith(f"FLUX.1-dev loaded with weight_dtype default (bf16): {bf16}"), lines
    assert verdicts[1].startswith(f"FLUX.1-dev loaded with weight_dtype fp8_e4m3fn: {fp8}"), lines
    assert all(line.startswith("    VRAM plan (auto): ") for line in lines if line not in verdicts), lines


def test_smoke_prints_the_plan_for_the_bundled_workflow(pack):
    """smoke.py's GPU-only step, run here on the CPU's numbers: the bundled workflow's settings, this device."""
    spec = importlib.util.spec_from_file_location("fluxlora_smoke_script", PACK / "smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    selftest = _selftest("workflow")
    lines = smoke.plan_lines(pack.__name__, sys.modules["fluxlora_selftest"], selftest.default_workflow())
    assert lines[0].startswith("FLUX.1-dev on this card (") and "(balanced preset, rank 16, 1024 px)" in lines[0], lines
    assert sum("FLUX.1-dev loaded with weight_dtype" in line for line in lines) == 2, lines
