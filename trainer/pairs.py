"""Paired datasets for edit LoRAs (FLUX.1 Kontext, FLUX.2): each target image has one or more reference ("control",
the "before") images, matched by file name, and its caption is the edit instruction.

- In the dataset folder: ``name_control.png`` next to ``name.png`` (one reference), or ``name_control_1.png``,
  ``name_control_2.png``, ... (several, in that order; ``name_control`` counts as the first).
- In control folders: one folder per reference, each holding ``name.*`` for ``name.png`` (``control_folder``: several
  folders separated by commas, in reference order).

Every target of a paired dataset has the same number of references (the most any target has): a target with fewer
is listed and skipped, never guessed."""
import os
import re
from pathlib import Path

CONTROL_SUFFIX = "_control"
_CONTROL_NAME = re.compile(r"(.+)" + CONTROL_SUFFIX + r"(?:_(\d+))?")


def control_folder_names(text: str) -> list:
    """The control folders of ``control_folder``: one per reference, comma separated."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def split_controls(files: list) -> tuple:
    """(targets, {target stem: [control file per reference]}, orphans, problems) of one folder's image files, by the
    ``name_control[_N].*`` convention. A target whose references are ambiguous (``name_control`` and ``name_control_1``)
    or numbered with a gap is skipped with a problem."""
    by_stem = {f.stem: f for f in files}
    numbered, orphans = {}, []
    for f in files:
        match = _CONTROL_NAME.fullmatch(f.stem)
        if match is None:
            continue
        if match.group(1) not in by_stem:
            orphans.append(f)
        else:
            numbered.setdefault(match.group(1), []).append((int(match.group(2) or 1), f))
    controls, problems = {}, []
    for stem, found in numbered.items():
        slots = sorted(found, key=lambda item: item[0])
        numbers = [n for n, _ in slots]
        if len(set(numbers)) != len(numbers):
            clash = [f.name for n, f in slots if numbers.count(n) > 1]
            problems.append(f"{by_stem[stem].name}: {' and '.join(clash)} are the same reference (name_control is "
                            "name_control_1) - skipped")
        elif numbers != list(range(1, len(numbers) + 1)):
            problems.append(f"{by_stem[stem].name}: its references are numbered {', '.join(map(str, numbers))} - "
                            f"reference {next(n for n in range(1, len(numbers) + 2) if n not in numbers)} is missing - "
                            "skipped")
        else:
            controls[stem] = [f for _, f in slots]
    taken = {f for fs in numbered.values() for _, f in fs}
    bad = {by_stem[stem] for stem in numbered if stem not in controls}
    targets = [f for f in files if f not in taken and f not in orphans and f not in bad]
    return targets, controls, orphans, problems


def match_controls(targets: list, folders_files: list) -> tuple:
    """({target stem: [control file per folder that has one]}, control files no target has) for control folders
    matched by stem, one folder per reference in order."""
    stems = {t.stem for t in targets}
    controls, orphans = {}, []
    for slot, files in enumerate(folders_files):
        by_stem = {}
        for f in files:
            by_stem.setdefault(f.stem, f)
        for stem, f in by_stem.items():
            if stem in stems:
                controls.setdefault(stem, [None] * len(folders_files))[slot] = f
        orphans += [f for f in files if f.stem not in stems]
    return controls, orphans


def pair_problems(targets: list, controls: dict, orphans: list, control_folders: list) -> tuple:
    """(targets that have all their references, problems to report). A paired dataset trains complete pairs only: a
    target without references, or with fewer than the others, is skipped and listed, as is a control without a
    target."""
    count = max((len(c) for c in controls.values()), default=0)
    complete = {stem for stem, c in controls.items() if len(c) == count and all(f is not None for f in c)}
    paired = [t for t in targets if t.stem in complete]
    problems = []
    for t in targets:
        if t.stem not in controls:
            problems.append(f"{t.name}: no control image ({describe(control_folders, t.name)}) - skipped")
        elif t.stem not in complete:
            have = [f for f in controls[t.stem] if f is not None]
            problems.append(f"{t.name}: {len(have)} of the {count} reference images the other pairs have "
                            f"({describe(control_folders, t.name, count)}) - skipped")
    problems += [f"{f.name}: control image without a target image of the same name - ignored" for f in orphans]
    return paired, problems


def describe(control_folders: list, name: str, count: int = 1) -> str:
    stem = Path(name).stem
    if control_folders:
        return f"expected {stem}.* in {', '.join(control_folders)}"
    if count > 1:
        return f"expected {', '.join(f'{stem}{CONTROL_SUFFIX}_{i}.*' for i in range(1, count + 1))} next to it"
    return f"expected {stem}{CONTROL_SUFFIX}.* next to it"


def check_control_folders(folder: Path, control_folders: list, given: list):
    """Refuses a control folder that is the image folder itself (every image would be its own control, and an edit LoRA
    trained on such pairs learns to change nothing), or the same folder named twice."""
    for path, name in zip(control_folders, given):
        if os.path.samefile(folder, path):
            raise ValueError(f"DatasetLoader: the control folder '{name}' is the image folder itself, so every image "
                             "would be its own control. The control folder must hold the 'before' images, each with "
                             "the file name of its edited image in the dataset folder (001.png for 001.png); or leave "
                             f"control_folder empty and put each one next to its image as name{CONTROL_SUFFIX}.png.")
    for i, path in enumerate(control_folders):
        for j in range(i):
            if os.path.samefile(control_folders[j], path):
                raise ValueError(f"DatasetLoader: the control folders '{given[j]}' and '{given[i]}' are the same "
                                 "folder: name one folder per reference image.")


def same_image_problem(target: str, control: str) -> str:
    """The report line for a pair whose control image is the target image (the same file, or the same content)."""
    return (f"{target}: its control image {control} is the same image, so the pair shows no edit - skipped (the "
            "control must be the 'before' image)")
