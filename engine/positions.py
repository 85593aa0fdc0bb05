"""Virtual positions: where inserted tokens go without shifting anyone else.

Every token of a segment keeps a real-valued position while others are inserted and deleted, so
an insert makes only the new tokens dirty instead of every token after it. New tokens take evenly
spaced positions between their neighbours; when those gaps would fall below `MIN_GAP`, a small
neighbourhood around the insert is spread out again ("relabelled") and its tokens become dirty.
Compaction (in idle time) returns a segment to the canonical positions 0..T-1.
"""

from dataclasses import dataclass

import numpy as np
import torch

# Learned position rows are interpolated between integers: tokens closer than this would read
# almost the same row, which the model never saw in training.
MIN_GAP = 1 / 16
# A relabelled neighbourhood grows until its tokens are at least this far apart, so it takes
# several more inserts at the same place before it must be relabelled again.
RELABEL_GAP = 1 / 2


@dataclass(frozen=True)
class Placement:
    positions: torch.Tensor  # (T',) float64, the segment's positions after the edit
    moved: list[int]  # indices (after the edit) of kept tokens whose position changed


def canonical(length: int) -> torch.Tensor:
    return torch.arange(length, dtype=torch.float64)  # (T,)


def place(old: torch.Tensor, start: int, end: int, inserted: int, limit: int) -> Placement:
    """Positions after old tokens [start, end) are replaced by `inserted` new ones.

    `old` (T,) float64 increasing; positions stay in [0, limit - 1]. Computed in numpy: a
    keystroke places a token or two, and torch's per-call overhead was ~0.1 ms of an edit.
    """
    given = old.cpu().numpy()
    kept = np.concatenate([given[:start], given[end:]])  # (T - (end - start),)
    if inserted == 0:
        return Placement(torch.from_numpy(kept).to(old.device), [])
    if len(kept) + inserted > limit:
        raise ValueError(f"a segment of {len(kept) + inserted} tokens does not fit "
                         f"{limit} positions")
    positions = np.concatenate([kept[:start], np.full(inserted, np.nan), kept[start:]])  # (T',)
    lo, hi = start, start + inserted  # the window [lo, hi) to place; new tokens are inside
    while _gap(positions, lo, hi, limit) < (MIN_GAP if lo == start and hi == start + inserted
                                            else RELABEL_GAP):
        if lo == 0 and hi == len(positions):
            break  # the whole segment: the gap is as large as it can be
        # Grow towards the free room after the last token first (where typing usually goes).
        if hi < len(positions) and (lo == 0 or hi - start <= start + inserted - lo):
            hi += 1
        else:
            lo -= 1
    first, step = _spread(positions, lo, hi, limit)
    before = positions[lo:hi].copy()
    positions[lo:hi] = first + step * np.arange(hi - lo, dtype=np.float64)
    moved = [i for i in range(lo, hi)
             if not start <= i < start + inserted and positions[i] != before[i - lo]]
    return Placement(torch.from_numpy(positions).to(old.device), moved)


def _spread(positions: np.ndarray, lo: int, hi: int, limit: int) -> tuple[float, float]:
    """First position and spacing for tokens [lo, hi) between their neighbours.

    Without a neighbour, the segment's bound (0 or limit - 1) may be taken by a token itself.
    Where there is room, the spacing is 1, as in the canonical model.
    """
    left = float(positions[lo - 1]) if lo > 0 else 0.0
    right = float(positions[hi]) if hi < len(positions) else float(limit - 1)
    gaps = hi - lo + 1 - (lo == 0) - (hi == len(positions))
    step = min(1.0, (right - left) / gaps) if gaps else 1.0
    return (left + step if lo > 0 else left), step


def _gap(positions: np.ndarray, lo: int, hi: int, limit: int) -> float:
    return _spread(positions, lo, hi, limit)[1]
