"""What holds the peak of a CUDA memory trace (``torch.cuda.memory._snapshot()`` after
``torch.cuda.memory._record_memory_history``): the trace's allocations and frees are replayed, and the blocks alive at the
moment the most bytes were allocated are summed by the code that allocated them (the innermost stack frame outside
PyTorch itself: a layer of ComfyUI, peft or the pack)."""
from collections import Counter

GIB = 1024 ** 3
FREES = ("free_requested", "free_completed")   # a block counts as freed at the first of these


def where(frames) -> str:
    for frame in frames:
        name = frame.get("filename", "")
        if "/torch/" not in name and not name.startswith("<"):
            return f"{name.rsplit('/', 2)[-2]}/{name.rsplit('/', 1)[-1]}:{frame.get('line')} {frame.get('name')}"
    return "torch (no caller recorded)"


def alive_at_peak(events, before: int = 0, top: int = 12) -> list:
    """[(where, GiB)] of the blocks alive at the allocation peak, largest first (at most ``top``, the rest summed as
    'other'). ``before``: bytes allocated before recording began (one entry, less what the trace frees of them); the
    peak is that of everything allocated, theirs included."""
    alive, total, peak, at_peak, before_at_peak = {}, 0, -1, {}, before
    requested = set()   # a free is counted at its first event: free_requested, then free_completed of the same block
    for e in events:
        if e["action"] == "alloc":
            alive[e["addr"]] = (e["size"], where(e.get("frames", ())))
            total += e["size"]
            if total + before > peak:
                peak, at_peak, before_at_peak = total + before, dict(alive), before
        elif e["action"] in FREES:
            if e["action"] == "free_completed" and e["addr"] in requested:
                requested.discard(e["addr"])
                continue
            if e["action"] == "free_requested":
                requested.add(e["addr"])
            if e["addr"] in alive:
                total -= alive.pop(e["addr"])[0]
            else:   # allocated before the trace (e.g. the MODEL, moved out of VRAM for a training copy)
                before -= e["size"]
    sums = Counter()
    for size, site in at_peak.values():
        sums[site] += size
    ranked = sums.most_common()
    rows = [(site, size / GIB) for site, size in ranked[:top]]
    if ranked[top:]:
        rows.append((f"other ({len(ranked) - top} sites)", sum(s for _, s in ranked[top:]) / GIB))
    if before_at_peak > 0:
        rows.insert(0, ("allocated before the run (the MODEL's weights)", before_at_peak / GIB))
    return rows
