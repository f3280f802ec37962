"""Socket types shared by the nodes."""
from comfy_api.latest import io

LORA_MODEL = io.Custom("LORA_MODEL")      # ComfyUI's own LoRA-weights type: also works with 'Load LoRA Model'
LOSS_MAP = io.Custom("LOSS_MAP")          # ComfyUI's own loss-history type: also works with 'Plot Loss Graph'
FLUX_DATASET = io.Custom("FLUX_DATASET")  # trainer.dataset.FluxDataset
FLUX_SAMPLE_SETTINGS = io.Custom("FLUX_SAMPLE_SETTINGS")  # trainer.sampling.SampleSettings
FLUX_LORA_ADVANCED = io.Custom("FLUX_LORA_ADVANCED")      # {setting name: value} that replace the preset's values


def search_aliases(*aliases) -> dict:
    """io.Schema's search_aliases (what else the node search finds a node by), where this ComfyUI's schema has them."""
    import dataclasses
    fields = {f.name for f in dataclasses.fields(io.Schema)} if dataclasses.is_dataclass(io.Schema) else set()
    return {"search_aliases": list(aliases)} if "search_aliases" in fields else {}
