"""Builds the GPU bench bundle: everything a bare, offline GPU box needs beside the project tree to run the bench
(bench/gpu/kit.sh run), in bench/gpu/bundle/ (ignored by git, carried to the box as one path).

    python3 bench/gpu/bundle.py build [--comfyui <ComfyUI v0.33.0 tree>]   # what `kit.sh build` runs
    python3 bench/gpu/bundle.py check                                      # the built bundle against its limits

The bundle holds:
- wheels/: the wheels of bench/gpu/wheels.txt for CPython 3.12 / manylinux x86_64 (``pip download --no-deps
  --only-binary=:all:``), some trimmed of native libraries the box cannot use (``drop=`` / ``keep=`` there);
- ComfyUI.tar.gz: a supported ComfyUI release without what headless training and sampling never import (its
  frontend is a separate package and not carried; no API nodes, tests, blueprints, models or the tokenizers of
  models the bench does not build);
- MANIFEST.json: every file with its size and sha256, the ComfyUI version and the commit of the tree that built it.
It refuses (exit 1) a bundle above LIMIT_MIB, so that it and the project tree fit what the box carries (64 MiB).
Downloads are cached in ~/.cache/fluxlora-gpu-wheels, so a rebuild from a fresh clone asks the registry nothing new.
"""
import argparse
import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUNDLE = HERE / "bundle"
CACHE = Path(os.environ.get("FLUXLORA_WHEEL_CACHE", Path.home() / ".cache" / "fluxlora-gpu-wheels"))
LIMIT_MIB = 60
MIB = 1024 ** 2
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# ComfyUI folders headless training and sampling never import (top level), and data files of models the bench does not
# build (the tokenizers of text encoders other than FLUX.1's CLIP-L / T5, which the tests' tiny models use)
COMFY_SKIP_DIRS = {".git", ".github", ".ci", "tests", "tests-unit", "comfy_api_nodes", "blueprints", "models",
                   "script_examples", "input", "output", "user", "custom_nodes", "temp", "docs"}
COMFY_KEEP_TOKENIZERS = {"t5_tokenizer"}
# ComfyUI requirements the bundle leaves out on purpose (tests/unit/test_gpu_bundle.py holds every other one to the
# box's packages or the bundle's wheels)
NOT_CARRIED = {
    "comfyui-frontend-package": "the web frontend: the bench runs ComfyUI headless",
    "comfyui-workflow-templates": "the frontend's template browser",
    "comfyui-embedded-docs": "the frontend's node docs",
    "kornia": "non-essential in ComfyUI's list: only optional image-filter nodes import it (they then fail to load, "
              "nothing the bench runs)",
    "pyopengl": "non-essential: 3D preview nodes",
    "comfy-angle": "non-essential: 3D preview nodes",
}
COMFY_SKIP_SUFFIXES = (".pyc", ".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4")


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    drop: tuple = ()      # archive members to leave out (glob patterns)
    keep: tuple = ()      # of the native libraries (*.so), only these travel (glob patterns)

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them (pydantic_core == pydantic-core == Pydantic.Core)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_wheels(path: Path = HERE / "wheels.txt") -> list:
    wheels = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, *options = line.split()
        name, version = spec.split("==")
        opts = dict(o.split("=", 1) for o in options)
        wheels.append(Wheel(name, version, tuple(opts.get("drop", "").split(",")) if "drop" in opts else (),
                            tuple(opts.get("keep", "").split(",")) if "keep" in opts else ()))
    names = [normalized(w.name) for w in wheels]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SystemExit(f"{path}: listed twice: {', '.join(duplicates)} (one version of each package)")
    return wheels


def download(wheel: Wheel) -> Path:
    """The wheel as the registry serves it, from the cache when it was fetched before."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = normalized(wheel.name).replace("-", "_")
    found = [p for p in CACHE.glob("*.whl") if normalized(p.name.split("-")[0]) == normalized(wheel.name)
             and p.name.split("-")[1] == wheel.version]
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "-d", str(CACHE), wheel.requirement]
    for platform in PLATFORMS:
        cmd[4:4] = ["--platform", platform]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = [p for p in CACHE.glob("*.whl") if normalized(p.name.split("-")[0]) == normalized(wheel.name)
             and p.name.split("-")[1] == wheel.version]
    if proc.returncode != 0 or not found:
        raise SystemExit(f"could not download {wheel.requirement} ({stem}) for CPython 3.12 manylinux x86_64:\n"
                         + proc.stderr[-2000:])
    return found[0]


def _dropped(member: str, wheel: Wheel) -> bool:
    if any(fnmatch.fnmatch(member, pattern) for pattern in wheel.drop):
        return True
    return bool(wheel.keep) and member.endswith(".so") and not any(fnmatch.fnmatch(member, p) for p in wheel.keep)


def trimmed(source: Path, wheel: Wheel, dest_dir: Path) -> Path:
    """The wheel as it travels: ``source`` itself, or a copy without the dropped members (RECORD rewritten to match,
    so pip installs it without complaint)."""
    dest = dest_dir / source.name
    if not wheel.drop and not wheel.keep:
        dest.write_bytes(source.read_bytes())
        return dest
    with zipfile.ZipFile(source) as zin:
        members = [m for m in zin.infolist() if not _dropped(m.filename, wheel)]
        if len(members) == len(zin.infolist()):
            raise SystemExit(f"{source.name}: drop/keep in wheels.txt matched nothing; fix the patterns")
        kept = {m.filename for m in members}
        tmp = dest.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
            for m in members:
                data = zin.read(m.filename)
                if m.filename.endswith(".dist-info/RECORD"):
                    data = "".join(line for line in data.decode().splitlines(keepends=True)
                                   if line.split(",", 1)[0] in kept or line.split(",", 1)[0] == m.filename).encode()
                zout.writestr(m, data)
        os.replace(tmp, dest)
    return dest


def comfyui_version(root: Path) -> str:
    return (root / "comfyui_version.py").read_text().split('"')[1]


def _comfy_member(rel: Path) -> bool:
    parts = rel.parts
    if parts[0] in COMFY_SKIP_DIRS or rel.name.endswith(COMFY_SKIP_SUFFIXES) or "__pycache__" in parts:
        return False
    if len(parts) >= 4 and parts[:2] == ("comfy", "text_encoders") and parts[2] not in COMFY_KEEP_TOKENIZERS:
        return False   # a tokenizer folder of a text encoder the bench never builds
    return True


def comfyui_tarball(root: Path, dest: Path) -> dict:
    """ComfyUI's tree (less what headless training never reads) as ComfyUI/ in a .tar.gz; returns its facts."""
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and _comfy_member(p.relative_to(root)))
    if not any(str(f) == "comfy/model_patcher.py" for f in files):
        raise SystemExit(f"{root} is not a ComfyUI tree (no comfy/model_patcher.py)")
    tmp = dest.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=9) as tar:
        for rel in files:
            info = tar.gettarinfo(str(root / rel), arcname=str(Path("ComfyUI") / rel))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(root / rel, "rb") as f:
                tar.addfile(info, f)
    os.replace(tmp, dest)
    return {"version": comfyui_version(root), "source": str(root), "files": len(files)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tree_commit() -> str:
    proc = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(HERE), "status", "--porcelain", "--", "trainer", "nodes", "bench"],
                           capture_output=True, text=True).stdout.strip()
    return (proc.stdout.strip() or "unknown") + (" + uncommitted changes" if dirty else "")


def total_bytes(bundle: Path = BUNDLE) -> int:
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


def check(bundle: Path = BUNDLE) -> dict:
    """The built bundle's manifest, after checking it is whole, has one version of each package and fits the limit."""
    manifest_path = bundle / "MANIFEST.json"
    if not manifest_path.is_file():
        raise SystemExit(f"no bundle at {bundle}: run `bash bench/gpu/kit.sh build` first")
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["files"]:
        path = bundle / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            raise SystemExit(f"bundle file missing or changed: {entry['path']} (rebuild: bash bench/gpu/kit.sh build)")
    listed = {bundle / e["path"] for e in manifest["files"]} | {manifest_path}
    extra = [str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file() and p not in listed]
    if extra:
        raise SystemExit(f"files in the bundle its manifest does not list: {', '.join(extra)} (rebuild it)")
    names = [normalized(Path(e["path"]).name.split("-")[0]) for e in manifest["files"] if e["path"].endswith(".whl")]
    if len(names) != len(set(names)):
        raise SystemExit(f"more than one version of a package in the bundle: {sorted(names)}")
    size = total_bytes(bundle)
    if size > LIMIT_MIB * MIB:
        raise SystemExit(f"the bundle is {size / MIB:.1f} MiB, above the {LIMIT_MIB} MiB limit (the box carries 64 MiB "
                         f"with the project tree): drop or trim a wheel in bench/gpu/wheels.txt")
    return manifest


def build(comfy_root: Path, bundle: Path = BUNDLE) -> dict:
    wheels = read_wheels()
    staging = Path(tempfile.mkdtemp(prefix="bundle.", dir=bundle.parent))
    (staging / "wheels").mkdir()
    for w in wheels:
        source = download(w)
        out = trimmed(source, w, staging / "wheels")
        note = f" (trimmed from {source.stat().st_size / MIB:.1f} MiB)" if out.stat().st_size != source.stat().st_size else ""
        print(f"  {out.name}: {out.stat().st_size / MIB:.2f} MiB{note}")
    comfy = comfyui_tarball(comfy_root, staging / "ComfyUI.tar.gz")
    print(f"  ComfyUI.tar.gz: ComfyUI {comfy['version']}, {comfy['files']} files, "
          f"{(staging / 'ComfyUI.tar.gz').stat().st_size / MIB:.2f} MiB")
    files = [{"path": str(p.relative_to(staging)), "bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(staging.rglob("*")) if p.is_file()]
    manifest = {"comfyui": comfy, "tree": _tree_commit(), "python": "3.12", "files": files,
                "wheels": [w.requirement for w in wheels]}
    (staging / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    check(staging)           # refuses before anything replaces a working bundle
    if bundle.exists():
        old = bundle.with_name(bundle.name + ".old")
        os.replace(bundle, old)
        subprocess.run(["rm", "-rf", str(old)], check=True)
    os.replace(staging, bundle)
    print(f"bundle: {bundle} — {total_bytes(bundle) / MIB:.1f} MiB of the {LIMIT_MIB} MiB limit "
          f"({len(wheels)} wheels + ComfyUI {comfy['version']})")
    return manifest


def _default_comfyui() -> Path:
    if os.environ.get("FLUXLORA_BUNDLE_COMFYUI"):
        return Path(os.environ["FLUXLORA_BUNDLE_COMFYUI"])
    return Path.home() / "comfy" / "ComfyUI-0.33"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["build", "check"])
    ap.add_argument("--comfyui", type=Path, default=None,
                    help="the ComfyUI tree to carry (default $FLUXLORA_BUNDLE_COMFYUI, else ~/comfy/ComfyUI-0.33)")
    args = ap.parse_args()
    if args.action == "build":
        build((args.comfyui or _default_comfyui()).resolve())
    else:
        manifest = check()
        print(f"bundle OK: {total_bytes() / MIB:.1f} MiB, ComfyUI {manifest['comfyui']['version']}, "
              f"{len(manifest['wheels'])} wheels, built from {manifest['tree']}")


if __name__ == "__main__":
    main()
