"""Paired datasets for FLUX.1 Kontext edit LoRAs: each target image has a control image (the "before"), matched by
file name — ``name.png`` in a control folder, or ``name_control.png`` next to ``name.png`` in the dataset folder. The
caption is the edit instruction."""
import os
from pathlib import Path

CONTROL_SUFFIX = "_control"


def split_controls(files: list) -> tuple:
    """(targets, {target stem: control file}) of one folder's image files, by the ``name_control.*`` convention."""
    by_stem = {f.stem: f for f in files}
    controls = {f.stem[:-len(CONTROL_SUFFIX)]: f for f in files
                if f.stem.endswith(CONTROL_SUFFIX) and f.stem[:-len(CONTROL_SUFFIX)] in by_stem}
    orphans = [f for f in files if f.stem.endswith(CONTROL_SUFFIX) and f.stem[:-len(CONTROL_SUFFIX)] not in by_stem]
    taken = set(controls.values())
    return [f for f in files if f not in taken and f not in orphans], controls, orphans


def match_controls(targets: list, control_files: list) -> tuple:
    """({target stem: control file}, control files no target has) for a separate control folder, matched by stem."""
    by_stem = {}
    for f in control_files:
        by_stem.setdefault(f.stem, f)
    stems = {t.stem for t in targets}
    return {s: f for s, f in by_stem.items() if s in stems}, [f for f in control_files if f.stem not in stems]


def pair_problems(targets: list, controls: dict, orphans: list, control_folder: str) -> tuple:
    """(targets that have a control, problems to report). A paired dataset trains pairs only: a target without its
    control is skipped and listed, as is a control without a target."""
    paired = [t for t in targets if t.stem in controls]
    problems = [f"{t.name}: no control image ({describe(control_folder, t.name)}) - skipped"
                for t in targets if t.stem not in controls]
    problems += [f"{f.name}: control image without a target image of the same name - ignored" for f in orphans]
    return paired, problems


def describe(control_folder: str, name: str) -> str:
    stem = Path(name).stem
    return (f"expected {stem}.* in {control_folder}" if control_folder
            else f"expected {stem}{CONTROL_SUFFIX}.* next to it")


def check_control_folder(folder: Path, control_folder: Path, given: str):
    """Refuses a control folder that is the image folder itself: every image would be its own control, and an edit LoRA
    trained on such pairs learns to change nothing."""
    if os.path.samefile(folder, control_folder):
        raise ValueError(f"DatasetLoader: the control folder '{given}' is the image folder itself, so every image would "
                         "be its own control. The control folder must hold the 'before' images, each with the file "
                         "name of its edited image in the dataset folder (001.png for 001.png); or leave "
                         f"control_folder empty and put each one next to its image as name{CONTROL_SUFFIX}.png.")


def same_image_problem(target: str, control: str) -> str:
    """The report line for a pair whose control image is the target image (the same file, or the same content)."""
    return (f"{target}: its control image {control} is the same image, so the pair shows no edit - skipped (the "
            "control must be the 'before' image)")
