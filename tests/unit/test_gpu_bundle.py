"""The GPU bench bundle (bench/gpu/): what it carries covers what ComfyUI and the pack import on the bare GPU box, its
wheels are trimmed without breaking them, and the bench rows run in priority order within a budget and report every
row. The whole rehearsal (a Python 3.12 box-like virtualenv, the bundle installed offline, every row on the tiny
models with the network unplugged; about 6 minutes here) is ``bash bench/gpu/kit.sh rehearse``; with
FLUXLORA_GPU_REHEARSAL=1 the last test runs it."""
import ast
import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import asdict
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PACK = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PACK / "bench" / "gpu"))
import bundle  # noqa: E402

# what ComfyUI imports when the bench boots it headless (tests/support/harness.setup): its core packages, the modules
# nodes.py and the executor import, and the native trainer node the bench times
STARTUP_FILES = ("nodes.py", "execution.py", "folder_paths.py", "node_helpers.py", "latent_preview.py",
                 "comfy_extras/nodes_train.py", "comfy_extras/nodes_custom_sampler.py")
STARTUP_PACKAGES = ("comfy", "comfy_api", "comfy_execution", "utils")


def _comfyui():
    root = bundle._default_comfyui()
    if not (root / "comfy" / "model_patcher.py").is_file():
        pytest.skip(f"the ComfyUI the bundle carries is not at {root} (tests/setup_env.sh sets it up)")
    return root


def _available():
    """Distribution names (normalized) the box has or the bundle carries, with the wheel versions."""
    box = {bundle.normalized(Requirement(line.split("#")[0]).name)
           for line in (PACK / "bench/gpu/box-packages.txt").read_text().splitlines() if line.split("#")[0].strip()}
    carried = {bundle.normalized(w.name): w.version for w in bundle.read_wheels()}
    return box, carried


def _unmet(requirements) -> list:
    box, carried = _available()
    unmet = []
    for line in requirements:
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        name = bundle.normalized(req.name)
        if name in carried:
            if req.specifier and carried[name] not in req.specifier:
                unmet.append(f"{line}: the bundle carries {carried[name]}")
        elif name not in box and name not in bundle.NOT_CARRIED:
            unmet.append(f"{line}: neither on the box nor in bench/gpu/wheels.txt")
    return unmet


def test_bundle_covers_the_requirements_of_comfyui_and_the_pack():
    comfy_requirements = (_comfyui() / "requirements.txt").read_text().splitlines()
    assert _unmet(comfy_requirements) == []
    assert _unmet((PACK / "requirements.txt").read_text().splitlines()) == []
    # and the check can fail: a pin the bundle does not meet, a package nobody provides
    assert _unmet(["comfy-kitchen==0.1.0", "some-new-dependency"]) == [
        "comfy-kitchen==0.1.0: the bundle carries 0.2.31", "some-new-dependency: neither on the box nor in "
        "bench/gpu/wheels.txt"]


def _module_imports(path: Path) -> set:
    """Top-level names a module imports whenever it is imported: its unconditional module-level imports (not those
    under an ``if`` of a command-line option or platform, not optional ones in ``try`` blocks, not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _third_party(names, local) -> set:
    return {n for n in names if n not in sys.stdlib_module_names and n not in local and n != "__future__"}


def test_every_module_imported_at_start_up_is_on_the_box_or_in_the_bundle():
    root = _comfyui()
    local = {p.stem for p in root.iterdir() if p.suffix == ".py" or (p.is_dir() and not p.name.startswith("."))}
    files = [root / f for f in STARTUP_FILES]
    files += [p for pkg in STARTUP_PACKAGES for p in (root / pkg).rglob("*.py")
              if bundle._comfy_member(p.relative_to(root))]
    pack_files = [PACK / "__init__.py"] + sorted((PACK / "trainer").glob("*.py")) + sorted((PACK / "nodes").glob("*.py"))
    imported = set()
    for path in files + pack_files:
        imported |= _third_party(_module_imports(path), local | {"comfy_extras"})
    distributions = importlib.metadata.packages_distributions()
    box, carried = _available()
    missing = []
    for name in sorted(imported):
        # the distribution that provides it here; where the test environment has none (the tests' torchvision
        # stubs, packages only the box or the bundle has), the import name is the distribution's name
        dists = {bundle.normalized(d) for d in distributions.get(name, [])} or {bundle.normalized(name)}
        if not dists & (box | set(carried)):
            missing.append(f"{name} (from {', '.join(sorted(dists))})")
    assert missing == [], f"imported at start-up but neither on the box nor in the bundle: {missing}"
    assert {"torch", "av", "comfy_kitchen", "comfy_aimdo", "peft"} <= imported   # the scan sees the real imports


def test_every_file_the_bench_loads_travels_in_the_comfyui_copy():
    root = _comfyui()
    kept = [rel for rel in (p.relative_to(root) for p in root.rglob("*") if p.is_file()) if bundle._comfy_member(rel)]
    kept_names = {str(rel) for rel in kept}
    for needed in STARTUP_FILES + ("comfy/ldm/flux/model.py", "comfy/ldm/chroma/model.py", "comfy/model_base.py",
                                   "comfy/k_diffusion/sampling.py", "comfyui_version.py", "comfy/cli_args.py",
                                   "comfy/sd1_tokenizer/vocab.json", "comfy/text_encoders/t5_tokenizer/tokenizer.json"):
        assert needed in kept_names, needed
    assert not [n for n in kept_names if n.split("/")[0] in ("tests", "tests-unit", "comfy_api_nodes", "blueprints")]
    assert not [n for n in kept_names if n.startswith("comfy/text_encoders/qwen25_tokenizer/")]


def _wheel(path: Path, members: dict):
    record = "".join(f"{name},sha256=x,{len(data)}\n" for name, data in members.items())
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr("demo-1.0.dist-info/RECORD", record + "demo-1.0.dist-info/RECORD,,\n")


def test_trimming_a_wheel_drops_only_the_named_native_libraries(tmp_path):
    source = tmp_path / "src" / "demo-1.0-py3-none-any.whl"
    source.parent.mkdir()
    _wheel(source, {"demo/__init__.py": b"x = 1\n", "demo/libdemo_cpu.so": b"cpu", "demo/libdemo_cuda118.so": b"118",
                    "demo/libdemo_cuda130.so": b"130", "demo/backends/hip/_C.so": b"hip"})
    out = tmp_path / "out"
    out.mkdir()
    keep = bundle.Wheel("demo", "1.0", keep=("demo/libdemo_cpu.so", "demo/libdemo_cuda130.so"))
    with zipfile.ZipFile(bundle.trimmed(source, keep, out)) as z:
        assert sorted(z.namelist()) == ["demo-1.0.dist-info/RECORD", "demo/__init__.py", "demo/libdemo_cpu.so",
                                        "demo/libdemo_cuda130.so"]
        record = z.read("demo-1.0.dist-info/RECORD").decode()
    assert "cuda118" not in record and "hip" not in record and "demo/libdemo_cuda130.so" in record
    drop = bundle.Wheel("demo", "1.0", drop=("demo/backends/*",))
    with zipfile.ZipFile(bundle.trimmed(source, drop, out)) as z:
        assert "demo/backends/hip/_C.so" not in z.namelist() and "demo/libdemo_cuda118.so" in z.namelist()
    with pytest.raises(SystemExit, match="matched nothing"):
        bundle.trimmed(source, bundle.Wheel("demo", "1.0", drop=("nothing/*",)), out)


def test_wheel_list_has_one_version_of_each_package(tmp_path):
    assert len({bundle.normalized(w.name) for w in bundle.read_wheels()}) == len(bundle.read_wheels())
    twice = tmp_path / "wheels.txt"
    twice.write_text("pydantic_core==2.50.5\npydantic-core==2.50.4  # again\n")
    with pytest.raises(SystemExit, match="listed twice: pydantic-core"):
        bundle.read_wheels(twice)


def test_bundle_check_refuses_a_bundle_over_the_limit_or_with_strays(tmp_path, monkeypatch):
    (tmp_path / "wheels").mkdir()
    whl = tmp_path / "wheels" / "demo-1.0-py3-none-any.whl"
    whl.write_bytes(b"0" * 1000)
    manifest = {"comfyui": {"version": "0.33.0"}, "tree": "abc", "wheels": ["demo==1.0"],
                "files": [{"path": "wheels/demo-1.0-py3-none-any.whl", "bytes": 1000, "sha256": ""}]}
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    assert bundle.check(tmp_path)["tree"] == "abc"
    monkeypatch.setattr(bundle, "LIMIT_MIB", 0.0005)
    with pytest.raises(SystemExit, match="above the 0.0005 MiB limit"):
        bundle.check(tmp_path)
    monkeypatch.setattr(bundle, "LIMIT_MIB", 60)
    (tmp_path / "wheels" / "stray.whl").write_bytes(b"1")
    with pytest.raises(SystemExit, match="does not list: wheels/stray.whl"):
        bundle.check(tmp_path)


def test_rows_run_in_priority_order_and_a_spent_budget_still_reports_every_row(tmp_path):
    """With no time left no row starts, yet every row is reported (with the command that runs it later), the table is
    written and the run exits 0; rows come in the bench's priority order."""
    import rows
    groups = [r.group for r in rows.ROWS]
    assert groups == sorted(groups) and set(groups) == {1, 2, 3, 4, 5, 6}
    assert rows.ROWS[0].key == "bf16-1024" and rows.ROWS[0].resolution == 1024
    proc = subprocess.run([sys.executable, str(PACK / "bench/gpu/rows.py"), "--budget-s", "0", "--out", str(tmp_path),
                           "--rows", "fp8-1024,native-1024"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [entry["row"]["key"] for entry in lines] == ["fp8-1024", "native-1024"]
    assert all("rerun with --rows" in entry["result"]["skipped"] for entry in lines)
    table = (tmp_path / "RESULTS.md").read_text()
    assert "| fp8-1024 |" in table and "not run: budget" in table
    assert json.loads((tmp_path / "env.json").read_text())["comfyui"]


def test_results_table_sets_each_row_against_its_baseline():
    import rows
    header = dict(device="NVIDIA H100", date="2026-12-07", comfyui="0.33.0", torch="2.11.0", command="kit.sh run",
                  tree="abc", warmup=2, steps=8)
    base = {"row": asdict(rows.ROWS[0]), "result": {"s_per_step": 0.5, "first_step_s": 3.0, "peak_allocated_gb": 30.0,
                                                        "peak_reserved_gb": 32.0, "peak_ram_gb": 40.0,
                                                        "plan_peak_gb": 33.0, "plan_base_weights": "as loaded"}}
    native = {"row": asdict(next(r for r in rows.ROWS if r.key == "native-1024")),
              "result": {"s_per_step": 1.5, "peak_ram_gb": 50.0, "note": ""}}
    compiled = {"row": asdict(next(r for r in rows.ROWS if r.key == "compile-1024")),
                "result": {"s_per_step": 0.4, "first_step_s": 63.0, "peak_allocated_gb": 30.0, "peak_ram_gb": 40.0}}
    text = rows.table([base, native, compiled], header)
    assert "| 0.500 | 3.0 | 30.00 / 32.00 | 33.00 (+10%) |" in text    # the plan's estimate against the measured peak
    assert "3.00x the s/step of bf16-1024" in text                       # native / ours
    assert "0.80x the s/step of bf16-1024; compile ≈60 s" in text


@pytest.mark.skipif(not os.environ.get("FLUXLORA_GPU_REHEARSAL"), reason="the full rehearsal takes ~6 minutes: "
                    "FLUXLORA_GPU_REHEARSAL=1 (or run bash bench/gpu/kit.sh rehearse)")
def test_full_rehearsal_runs_every_row_offline_on_python_312(tmp_path):
    proc = subprocess.run(["bash", str(PACK / "bench/gpu/kit.sh"), "rehearse"], capture_output=True, text=True,
                          timeout=3000, env=dict(os.environ, OUT=str(tmp_path)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rehearsal: all" in proc.stdout
