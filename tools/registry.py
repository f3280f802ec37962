"""Comfy Registry metadata, kept in one place and checked before anything is published.

    python tools/registry.py set-repository https://github.com/<owner>/<repo>   # the repository URL, once
    python tools/registry.py check                                             # what the publish workflow runs

``set-repository`` writes the repository's URL into pyproject.toml: [project.urls] Repository / Issues /
Documentation and the Icon / Banner image URLs (raw files of the default branch). ``check`` exits 1, saying what to
fix, while any of these holds the placeholder, or when the version, the changelog and the bundled workflows disagree:
a version published to the Registry can never be changed, so nothing half-set may go out.
"""
import argparse
import json
import os
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
PLACEHOLDER = "REPLACE-WITH-OWNER"
IMAGES = {"Icon": "docs/icon.png", "Banner": "docs/banner.png"}
SEMVER = re.compile(r"^\d+\.\d+\.\d+$")


def metadata(path: Path = PYPROJECT) -> dict:
    return tomllib.loads(path.read_text())


def _github(url: str) -> tuple:
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url)
    if not match:
        raise SystemExit(f"not a GitHub repository URL: {url} (expected https://github.com/<owner>/<repo>)")
    return match.groups()


def set_repository(url: str, path: Path = PYPROJECT, branch: str = "main"):
    owner, repo = _github(url)
    base = f"https://github.com/{owner}/{repo}"
    raw = f"https://raw.githubusercontent.com/{owner}/{repo}/{branch}"
    values = {"Repository": base, "Issues": f"{base}/issues", "Documentation": f"{base}#readme",
              **{key: f"{raw}/{file}" for key, file in IMAGES.items()}}
    text = path.read_text()
    for key, value in values.items():
        text, count = re.subn(rf'(?m)^{key} = ".*"$', f'{key} = "{value}"', text)
        if count != 1:
            raise SystemExit(f"{path}: expected one '{key} = \"...\"' line, found {count}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _png_size(path: Path) -> tuple:
    data = path.read_bytes()[:24]
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path.name} is not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def workflow_versions(root: Path = ROOT) -> dict:
    """{workflow file: {(cnr_id, ver) of the pack's nodes}} for every bundled UI workflow."""
    found = {}
    for path in sorted((root / "workflows").glob("*.json")):
        nodes = json.loads(path.read_text()).get("nodes", [])
        found[path.name] = {((n.get("properties") or {}).get("cnr_id"), (n.get("properties") or {}).get("ver"))
                            for n in nodes if str(n.get("type", "")).startswith("FluxLoRA_")}
    return found


def problems(root: Path = ROOT) -> list:
    meta = metadata(root / "pyproject.toml")
    project, comfy = meta["project"], meta["tool"]["comfy"]
    found = []
    urls = dict(project.get("urls", {}), **{k: comfy.get(k, "") for k in IMAGES})
    for key in ("Repository", "Issues", "Documentation", *IMAGES):
        if not urls.get(key):
            found.append(f"{key} is empty")
        elif PLACEHOLDER in urls[key]:
            found.append(f"{key} still holds the placeholder: run python tools/registry.py set-repository <URL>")
    version = project["version"]
    if not SEMVER.match(version):
        found.append(f"version {version} is not semver X.Y.Z")
    changelog = (root / "CHANGELOG.md").read_text()
    newest = re.search(r"(?m)^## (\d+\.\d+\.\d+)", changelog)
    if not newest or newest.group(1) != version:
        found.append(f"CHANGELOG.md's newest entry is {newest and newest.group(1)}, the version is {version}: "
                     f"say what changed for users")
    for name, pairs in workflow_versions(root).items():
        if pairs and pairs != {(project["name"], version)}:   # (the merge workflow has only stock nodes)
            found.append(f"workflows/{name}: the pack's nodes carry {sorted(pairs, key=str)}, not "
                         f"('{project['name']}', '{version}'): run python tools/registry.py stamp-workflows")
    for key, file in IMAGES.items():
        path = root / file
        if not path.is_file():
            found.append(f"{key} image {file} is missing")
            continue
        width, height = _png_size(path)
        if key == "Icon" and (width != height or width > 400):
            found.append(f"{file} is {width}x{height}: the Registry wants a square icon of at most 400x400")
        if key == "Banner" and abs(width / height - 21 / 9) > 0.02:
            found.append(f"{file} is {width}x{height}: the Registry wants a 21:9 banner")
    if not (root / "LICENSE").is_file() or project.get("license") != {"file": "LICENSE"}:
        found.append("license must be {file = \"LICENSE\"} with a LICENSE file")
    return found


def stamp_workflows(root: Path = ROOT):
    """Writes the Registry id and version into the pack's nodes of every bundled UI workflow, as ComfyUI's frontend
    does when it saves a workflow from a Registry install (``properties.cnr_id`` / ``ver``): ComfyUI-Manager's
    "install missing nodes" then finds the pack for a user who has only the workflow."""
    project = metadata(root / "pyproject.toml")["project"]
    for path in sorted((root / "workflows").glob("*.json")):
        workflow = json.loads(path.read_text())
        for node in workflow.get("nodes", []):
            if str(node.get("type", "")).startswith("FluxLoRA_"):
                props = node.setdefault("properties", {})
                props["cnr_id"], props["ver"] = project["name"], project["version"]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(workflow, indent=2) + "\n")
        os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("check")
    sub.add_parser("stamp-workflows")
    setter = sub.add_parser("set-repository")
    setter.add_argument("url")
    setter.add_argument("--branch", default="main")
    args = ap.parse_args()
    if args.command == "set-repository":
        set_repository(args.url, branch=args.branch)
        print(f"pyproject.toml: repository {args.url}")
    elif args.command == "stamp-workflows":
        stamp_workflows()
    else:
        found = problems()
        if found:
            print("Not ready to publish:\n  " + "\n  ".join(found))
            sys.exit(1)
        print("Ready to publish.")


if __name__ == "__main__":
    main()
