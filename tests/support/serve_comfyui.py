"""Starts the real ComfyUI server (main.py) for the browser tests, with the tests-only adaptations: the tiny-model
loader shims and (where torchvision cannot import) the torchvision stub. Usage: python serve_comfyui.py <main.py args>."""
import runpy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    import comfy_env
    root = comfy_env.find_comfyui()
    sys.argv = [str(root / "main.py")] + sys.argv[1:]
    sys.path.insert(0, str(root))
    import comfy.options
    comfy.options.enable_args_parsing()  # parse sys.argv when comfy.cli_args is first imported (inside boot)
    comfy_env.boot()
    import tiny_models
    tiny_models.install_loader_shims()
    import tiny_captioners
    tiny_captioners.allow_qwen_processor_without_torchvision()
    runpy.run_path(str(root / "main.py"), run_name="__main__")


if __name__ == "__main__":
    main()
