"""The real ComfyUI server (the ComfyUI under test, --cpu) with this pack and the official frontend, driven by headless Chromium
through Playwright (Debian's /usr/bin/chromium; nothing is downloaded)."""
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import comfy_env

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("FLUXLORA_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def available():
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return os.path.exists(CHROMIUM)


def prepare_root(root: Path):
    """Tiny models, tiny captioners, a photo folder and an extra_model_paths.yaml under ``root``."""
    import photo_folder
    import tiny_captioners
    import tiny_models
    names = tiny_models.write_model_files(root / "models")
    tiny_captioners.write_tiny_florence2(root / "models" / "captioners" / "tiny-florence2")
    tiny_captioners.write_tiny_qwen25vl(root / "models" / "captioners" / "tiny-qwen25vl")
    for sub in ("input", "output", "temp", "user", "models/loras"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    photo_folder.write_photo_folder(root / "input" / "photos")
    settings = root / "user" / "default" / "comfy.settings.json"  # a returning user: no templates pop-up
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text('{"Comfy.TutorialCompleted": true}')
    comfy_env.pack_parent(root)
    (root / "extra_model_paths.yaml").write_text(
        "fluxlora_test:\n"
        f"  base_path: {root}\n"
        "  diffusion_models: models/diffusion_models\n  vae: models/vae\n  text_encoders: models/text_encoders\n"
        "  loras: models/loras\n  captioners: models/captioners\n  custom_nodes: custom_nodes\n")
    return names


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frontend_args() -> list:
    """``--front-end-root`` for FLUXLORA_FRONTEND_ROOT (an unpacked comfyui-frontend-package's static folder: the
    newest frontend, as tests/setup_env.sh prepares it), else nothing: the frontend that ComfyUI pins."""
    root = os.environ.get("FLUXLORA_FRONTEND_ROOT")
    if not root:
        return []
    if not (Path(root) / "index.html").is_file():
        raise RuntimeError(f"FLUXLORA_FRONTEND_ROOT={root} holds no frontend (no index.html): run tests/setup_env.sh")
    return ["--front-end-root", root]


@contextlib.contextmanager
def comfyui_server(root: Path):
    port = _free_port()
    log = open(root / "server.log", "w")
    cmd = [sys.executable, str(HERE / "serve_comfyui.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--extra-model-paths-config", str(root / "extra_model_paths.yaml"), "--output-directory", str(root / "output"),
           "--temp-directory", str(root / "temp"), "--input-directory", str(root / "input"),
           "--user-directory", str(root / "user"), "--disable-auto-launch", "--use-pytorch-cross-attention",
           "--disable-api-nodes"] + frontend_args()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(root))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("ComfyUI exited:\n" + (root / "server.log").read_text()[-3000:])
            try:
                urllib.request.urlopen(url + "/system_stats", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("ComfyUI did not start:\n" + (root / "server.log").read_text()[-3000:])
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def browser_page(url: str, width=1800, height=1100):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("() => window.app && window.app.graph && window.LiteGraph", timeout=120000)
        page.wait_for_timeout(1500)
        page.errors = errors
        try:
            yield page
        finally:
            browser.close()
