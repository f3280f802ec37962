"""NVIDIA's "CUDA Sysmem Fallback Policy" on Windows: what does not fit in VRAM silently spills into shared system
memory and training runs many times slower instead of stopping with an out-of-memory error (ai-toolkit #794). The
pack cannot switch the policy off; it says how when a run is near the card's size, and it names a several-fold
slowdown after the first steps as probable spilling."""
import platform
import statistics
from typing import Optional

import torch

NEAR = 0.9           # a plan whose peak is within 10% of the card (or above it) may spill
SLOWDOWN = 4.0       # a step this many times slower than the settled steps before it ...
IN_A_ROW = 3         # ... this many times in a row looks like spilling, not a hiccup
SETTLED = (2, 8)     # the steps (0-based) whose median is the settled speed: after warm-up, before any spill

ADVICE = ("On Windows the NVIDIA driver can move what does not fit in VRAM into system RAM ('CUDA - Sysmem Fallback "
          "Policy'), and training then runs many times slower instead of stopping. To get a clear out-of-memory error "
          "instead: NVIDIA Control Panel > Manage 3D Settings > Program Settings > Add > ComfyUI's python.exe > "
          "'CUDA - Sysmem Fallback Policy': 'Prefer No Sysmem Fallback' > Apply, then restart ComfyUI.")


def spills_silently(device, system: Optional[str] = None) -> bool:
    """Whether a CUDA device on this system may spill into shared memory (Windows drivers do; Linux's do not)."""
    return (system or platform.system()) == "Windows" and torch.device(device).type == "cuda"


def fallback_advice(plan, device, system: Optional[str] = None) -> str:
    """ADVICE when ``plan`` (a memory_plan.Plan) comes within 10% of the card's memory on a system that spills, else ''."""
    if not spills_silently(device, system) or plan.budget <= 0:
        return ""
    return ADVICE if plan.peak >= NEAR * plan.budget else ""


class SpillWatch:
    """Watches step times for the several-fold, lasting slowdown spilling causes. ``step(seconds)`` returns a warning
    once, the first time it sees one. The caller leaves out intervals that include sampling or validation."""

    def __init__(self):
        self.times, self.slow, self.warned = [], 0, False

    def step(self, seconds: float) -> str:
        self.times.append(seconds)
        first, last = SETTLED
        if self.warned or len(self.times) <= last:
            return ""
        settled = statistics.median(self.times[first:last])
        self.slow = self.slow + 1 if seconds > SLOWDOWN * settled else 0
        if self.slow < IN_A_ROW:
            return ""
        self.warned = True
        return (f"Flux LoRA Train: steps now take {seconds:.1f} s, {seconds / settled:.0f}x the {settled:.2f} s of the "
                f"first steps: the GPU has probably run out of VRAM and spills into system RAM. " + ADVICE)
