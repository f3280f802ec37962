"""Where the training nodes keep what outlives a run: the encoding cache and the run folders."""
import os

import folder_paths

from ..trainer.checkpoint import runs_root


def cache_folder():
    """Encoded latents / captions (and rendered class images) persist here across runs and restarts; safe to delete."""
    return os.path.join(folder_paths.get_user_directory(), "fluxlora_cache")


def runs_folder():
    """Each run's checkpoints (LoRA files LoraLoader lists, and the state to resume from)."""
    return runs_root(folder_paths.get_folder_paths("loras"), folder_paths.get_output_directory())
