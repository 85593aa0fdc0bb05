"""The memory budget of segment states: what it must hold at least, and eviction.

The budget holds between passes: after each pass and compaction the worker evicts segment
states, least recently built or edited first over all documents, until they fit. It must hold
the largest state one segment can take, else the model is refused (`too_small`): the segment
used last, the one being typed in, is then never dropped. An evicted segment keeps its pooled
sum, so results need no model work; it is computed again when an edit reaches it.
"""

from collections.abc import Iterable

from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.live import largest_state_nbytes

from .documents import Entry


def too_small(memory_mb: float, engine: IncrementalEngine, name: str) -> str | None:
    """Why a budget of `memory_mb` cannot serve this model, or None if it can."""
    minimum = largest_state_nbytes(engine)
    if memory_mb * 2**20 >= minimum:
        return None
    return (f"memory_mb {memory_mb:g} is below the largest state one segment takes with {name} "
            f"({minimum / 2**20:.3f} MB): set memory_mb (--memory-mb) to at least that")


def evict(entries: Iterable[Entry], budget_bytes: float) -> int:
    """Drop segment states of the entries, least recently used first over all of them, until
    they fit `budget_bytes` (worker, under its lock). Returns how many were dropped."""
    entries = [e for e in entries if e.live is not None]
    total = sum(e.state_bytes for e in entries)
    if total <= budget_bytes:
        return 0
    ranked = sorted(((segment, e) for e in entries for segment in e.live.resident()),
                    key=lambda found: found[0].used)
    dropped = 0
    for segment, entry in ranked:
        if total <= budget_bytes:
            break
        freed = entry.live.evict(segment.index)
        entry.state_bytes -= freed
        total -= freed
        dropped += 1
    return dropped
