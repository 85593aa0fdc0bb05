"""A document kept live: its text, its segments, and one incremental state per segment.

This is what the daemon holds per open file. A text edit inside one segment becomes a token edit
on that segment's state; an edit that splits or merges segments (a blank line typed or deleted,
a paragraph pasted) rebuilds only the segments it touched. Untouched segments keep their state.

A segment's state can be evicted to save memory (`evict`): what stays is its pooled sum, so
results still need no model work, and the state is computed again from the text when the
segment is next edited or its state is read (`states`). Every build and edit stamps the segment
from one process-wide clock, so an owner of several documents can evict the least recently
used segments of all of them first (`resident`).

Building a big document segment by segment can take long, so the constructor, `apply` and
`compact` take `stop`, asked before each segment is computed; when it says yes they raise
`Stopped`. After the constructor or `apply` stopped, the document is half updated and must be
dropped; after `compact` it is whole, with the segments compacted so far. The constructor and
`apply_merged` also take `between`: when it says so, the segments not yet computed are left
pending, whole and consistent, and `settle` goes on with them later.
"""

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vqedit.text.edit import Edit, apply_all

from .document import Document
from .incremental import EditStats, IncrementalEngine
from .model import full_pass_macs
from .state import SegmentState
from .tokens import Tokenizer

_clock = itertools.count()  # one order of use over every live document in the process


# A burst of edits becomes one engine edit when together they replace at most this many
# characters; farther-apart edits are applied one by one, so each dirties only its tokens.
MERGE_SPAN = 256


class Stopped(Exception):
    """The owner's `stop` asked to stop before the next segment was computed."""


def never() -> bool:
    """The default `stop`: never stop."""
    return False


@dataclass
class LiveEditStats:
    macs: int  # multiply-accumulates of the whole edit, rebuilt segments included
    edited: list[EditStats] = field(default_factory=list)  # one per incrementally edited segment
    rebuilt: int = 0  # segments computed from scratch
    restored: int = 0  # of those, evicted segments computed again because the edit reached them


@dataclass(frozen=True)
class Batch:
    """How a burst of edits is applied (`LiveDocument.batch`)."""

    edits: list[Edit]  # in order
    merged: bool  # one edit computed segment by segment (`apply_merged`), else `apply` each


@dataclass(frozen=True)
class Evicted:
    """What stays of an evicted segment: enough for pooled results, not for an edit."""

    total: torch.Tensor  # (D,) float64 the state's sum of final hidden states
    tokens: int  # the state's length, special tokens included

    def __len__(self) -> int:
        return self.tokens


@dataclass(frozen=True)
class Pending:
    """A segment not computed yet: an open or a merged edit yielded before it (`between`).
    `settle` computes it, as does reading or editing it."""

    tokens: int  # its length, special tokens included

    def __len__(self) -> int:
        return self.tokens


@dataclass(frozen=True)
class Resident:
    """A segment whose state is in memory, as an owner ranks it for eviction."""

    index: int  # the segment, in text order
    used: int  # the clock when it was last built or edited (smaller: longer ago)
    state: SegmentState

    @property
    def nbytes(self) -> int:
        """Memory of its state (allocated rows)."""
        return self.state.nbytes(allocated=True)


def largest_state_nbytes(engine: IncrementalEngine) -> int:
    """The most memory one segment's state can take: a full window, grown once more by the
    spare rows a state keeps for inserts (`SegmentState.reserve`) when it had one row fewer."""
    state = engine.empty()
    window = engine.model.config.max_positions
    state.reserve(window - 1)
    state.reserve(window)
    return state.nbytes(allocated=True)


class LiveDocument:
    def __init__(self, engine: IncrementalEngine, tokenizer: Tokenizer, text: str,
                 stop: Callable[[], bool] = never, between: Callable[[], bool] = never) -> None:
        """Computes every segment in order, raising `Stopped` when `stop` says so before one;
        when `between` says so before one (after the first), the rest are left `Pending` for
        `settle` to go on with: an owner can serve other work while a big document opens."""
        self.engine = engine
        self.document = Document(tokenizer, text, engine.model.config.max_positions)
        self._states: list[SegmentState | Evicted | Pending] = [
            Pending(len(self.document.model_input(s))) for s in self.document.segments]
        self._used = [next(_clock) for _ in self._states]  # per segment, when last built or edited
        self.settle(stop, between)

    @property
    def text(self) -> str:
        return self.document.text

    @property
    def states(self) -> list[SegmentState]:
        """Every segment's state, computing evicted ones again (checks and benchmarks)."""
        return [self._resident(i) for i in range(len(self._states))]

    def apply(self, edit: Edit, stop: Callable[[], bool] = never) -> LiveEditStats:
        """Apply a text edit (raises `EditError`, changing nothing, if it does not fit, and
        `Stopped`, leaving the document to be dropped, if `stop` says so between segments)."""
        counter = self.engine.model.counter
        before = counter.macs
        old = self.document.segments
        change = self.document.apply(edit)
        seg, tok = change.segments, change.tokens
        stats = LiveEditStats(0)
        one_to_one = seg.end - seg.start == 1 and seg.new_end - seg.start == 1
        inside = one_to_one and old[seg.start].start <= tok.start and tok.end <= old[seg.start].end
        if inside and isinstance(self._states[seg.start], SegmentState):
            offset = len(self.document.tokenizer.prefix) - old[seg.start].start
            stats.edited.append(self.engine.apply(self._states[seg.start], tok.start + offset,
                                                  tok.end + offset, tok.new.ids))
            self._used[seg.start] = next(_clock)
        else:
            stats.restored = int(inside)  # evicted: computed from the text holding the edit
            self._states[seg.start:seg.end] = [self._build(i, stop) for i in seg.touched]
            self._used[seg.start:seg.end] = [next(_clock) for _ in seg.touched]
            stats.rebuilt = len(seg.touched)
        stats.macs = counter.macs - before
        return stats

    def batch(self, edits: list[Edit], after: str | None = None) -> "Batch":
        """How to apply a burst of edits, in order, that leads from this text to `after` (the
        caller's, or computed): the one place where edits are coalesced.
        1. One edit over the span that differs, where that span is small (`MERGE_SPAN`):
           typing's runs of neighbouring keystrokes cost one engine edit instead of many.
        2. One merged edit, each segment it reaches computed once (`apply_merged`), where that
           costs less than the edits one by one (the engine's measured seconds per edit against
           seconds per token of full passes): a replace-all, scattered changes.
        3. Otherwise each edit on its own, so each dirties only its own tokens."""
        if len(edits) < 2:
            return Batch(edits, merged=False)
        span = Edit.between(self.text, apply_all(self.text, edits) if after is None else after)
        if (span.end - span.start) + len(span.text) <= MERGE_SPAN:
            return Batch([span], merged=False)
        starts, ends = self.document.tokens.starts, self.document.tokens.ends
        reached = sum(s.end - s.start for s in self.document.segments
                      if starts[s.start] <= span.end and span.start <= ends[s.end - 1])
        if self.engine.costs.rebuild_is_cheaper(len(edits), reached):
            return Batch([span], merged=True)
        return Batch(edits, merged=False)

    def apply_all(self, edits: list[Edit], stop: Callable[[], bool] = never,
                  after: str | None = None) -> LiveEditStats:
        """Apply edits in order as `batch` (given `after` as it is) says. Raises like `apply`."""
        batch = self.batch(edits, after)
        if batch.merged:
            return self.apply_merged(batch.edits[0], stop)
        applied = [self.apply(edit, stop) for edit in batch.edits]
        return LiveEditStats(sum(a.macs for a in applied), [e for a in applied for e in a.edited],
                             sum(a.rebuilt for a in applied), sum(a.restored for a in applied))

    def apply_merged(self, edit: Edit, stop: Callable[[], bool] = never,
                     between: Callable[[], bool] = never) -> LiveEditStats:
        """Apply an edit by computing each segment it changed once, from its new tokens; a
        segment whose tokens are those of one it replaced keeps that one's state. A replace-all
        or a didChange of many scattered changes then costs at most one full pass per segment it
        changed. Raises like `apply`; when `between` says so before a segment, that segment and
        the rest are left `Pending` (`pending()`), computed when next read or edited."""
        counter = self.engine.model.counter
        before = counter.macs
        ids = self.document.tokens.ids
        old = [(tuple(ids[s.start:s.end]), state, used) for s, state, used
               in zip(self.document.segments, self._states, self._used, strict=True)]
        seg = self.document.apply(edit).segments
        kept = {key: (state, used) for key, state, used in old[seg.start:seg.end]
                if isinstance(state, SegmentState)}
        stats = LiveEditStats(0)
        states, used, stopped = [], [], False
        ids = self.document.tokens.ids
        for i in seg.touched:
            new = self.document.segments[i]
            reused = kept.pop(tuple(ids[new.start:new.end]), None)
            stopped = stopped or (reused is None and between())
            if reused is None and stopped:
                states.append(Pending(len(self.document.model_input(new))))
                used.append(next(_clock))
            elif reused is None:
                states.append(self._build(i, stop))
                used.append(next(_clock))
                stats.rebuilt += 1
            else:
                states.append(reused[0])
                used.append(reused[1])
        self._states[seg.start:seg.end] = states
        self._used[seg.start:seg.end] = used
        stats.macs = counter.macs - before
        return stats

    def pending(self) -> bool:
        """Whether segments are left to compute (a stopped open or merged edit)."""
        return any(isinstance(s, Pending) for s in self._states)

    def settle(self, stop: Callable[[], bool] = never, between: Callable[[], bool] = never,
               ) -> bool:
        """Compute the pending segments in text order; True once none is left. Raises
        `Stopped` like the constructor; stops early, returning False, when `between` says so
        before a segment after the first."""
        computed = 0
        for i, state in enumerate(self._states):
            if isinstance(state, Pending):
                if computed and between():
                    return False
                self._resident(i, stop)
                computed += 1
        return True

    def compact(self, stop: Callable[[], bool] = never) -> None:
        """Rebuild every segment at canonical positions, exactly (idle time; evicted ones too).

        Segment by segment: when `stop` says so it raises `Stopped`, the document whole, with
        the segments before that one compacted.
        """
        for i, state in enumerate(self._states):
            if stop():
                raise Stopped(f"compaction stopped before segment {i} of {len(self._states)}")
            self._states[i] = (self.engine.compact(state) if isinstance(state, SegmentState)
                               else self._build(i))

    def evict(self, index: int) -> int:
        """Drop segment `index`'s state, keeping its pooled sum; returns the bytes freed."""
        state = self._states[index]
        if not isinstance(state, SegmentState):
            return 0
        self._states[index] = Evicted(state.total.clone(), len(state))
        return state.nbytes(allocated=True)

    def resident(self) -> list[Resident]:
        """The segments whose states are in memory, least recently used first."""
        return sorted((Resident(i, self._used[i], s)
                       for i, s in enumerate(self._states) if isinstance(s, SegmentState)),
                      key=lambda r: r.used)

    def nbytes(self) -> int:
        """Memory of the states in memory (allocated rows)."""
        return sum(s.nbytes(allocated=True) for s in self._states if isinstance(s, SegmentState))

    def tokens(self) -> int:
        """Model-input tokens of all segments, special tokens included."""
        return sum(len(s) for s in self._states)

    def dense_macs(self) -> int:
        """What dense full passes (no codebooks) over every segment would cost: the baseline
        an edit's cost is compared with, from the token counts alone."""
        config = self.engine.model.config
        return sum(full_pass_macs(config, len(s)) for s in self._states)

    def embedding(self) -> torch.Tensor:
        """The document's pooled embedding: mean final state over all tokens, L2-normalised."""
        if not self._states:
            raise ValueError("nothing to pool: the document has no tokens")
        self.settle()
        total = torch.stack([s.total for s in self._states]).sum(0)  # (D,)
        return F.normalize((total / self.tokens()).float(), dim=0)

    def segment_embeddings(self) -> torch.Tensor:
        """One pooled embedding per segment (paragraph), L2-normalised. (N, D)"""
        self.settle()
        totals = torch.stack([s.total for s in self._states])  # (N, D)
        counts = torch.tensor([max(len(s), 1) for s in self._states])  # (N,)
        return F.normalize((totals / counts.unsqueeze(1)).float(), dim=1)

    def _resident(self, index: int, stop: Callable[[], bool] = never) -> SegmentState:
        state = self._states[index]
        if not isinstance(state, SegmentState):
            state = self._states[index] = self._build(index, stop)
            self._used[index] = next(_clock)
        return state

    def _build(self, index: int, stop: Callable[[], bool] = never) -> SegmentState:
        if stop():
            raise Stopped(f"stopped before computing segment {index}")
        return self.engine.build(self.document.model_input(self.document.segments[index]))
