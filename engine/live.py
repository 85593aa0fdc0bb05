"""A document kept live: its text, its segments, and one incremental state per segment.

This is what the daemon holds per open file. A text edit inside one segment becomes a token edit
on that segment's state; an edit that splits or merges segments (a blank line typed or deleted,
a paragraph pasted) rebuilds only the segments it touched. Untouched segments keep their state.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .document import Document
from .incremental import EditStats, IncrementalEngine
from .state import SegmentState
from .tokens import TextEdit, Tokenizer


@dataclass
class LiveEditStats:
    macs: int  # multiply-accumulates of the whole edit, rebuilt segments included
    edited: list[EditStats] = field(default_factory=list)  # one per incrementally edited segment
    rebuilt: int = 0  # segments computed from scratch


class LiveDocument:
    def __init__(self, engine: IncrementalEngine, tokenizer: Tokenizer, text: str) -> None:
        self.engine = engine
        self.document = Document(tokenizer, text, engine.model.config.max_positions)
        self.states = [self._build(i) for i in range(len(self.document.segments))]

    @property
    def text(self) -> str:
        return self.document.text

    def apply(self, edit: TextEdit) -> LiveEditStats:
        """Apply a text edit (raises `EditError`, changing nothing, if it does not fit)."""
        counter = self.engine.model.counter
        before = counter.macs
        old = self.document.segments
        change = self.document.apply(edit)
        seg, tok = change.segments, change.tokens
        stats = LiveEditStats(0)
        one_to_one = seg.end - seg.start == 1 and seg.new_end - seg.start == 1
        if one_to_one and old[seg.start].start <= tok.start and tok.end <= old[seg.start].end:
            offset = len(self.document.tokenizer.prefix) - old[seg.start].start
            stats.edited.append(self.engine.apply(self.states[seg.start], tok.start + offset,
                                                  tok.end + offset, tok.new.ids))
        else:
            self.states[seg.start:seg.end] = [self._build(i) for i in seg.touched]
            stats.rebuilt = len(seg.touched)
        stats.macs = counter.macs - before
        return stats

    def compact(self) -> None:
        """Rebuild every segment at canonical positions, exactly (idle time)."""
        self.states = [self.engine.compact(state) for state in self.states]

    def embedding(self) -> torch.Tensor:
        """The document's pooled embedding: mean final state over all tokens, L2-normalised."""
        if not self.states:
            raise ValueError("nothing to pool: the document has no tokens")
        total = torch.stack([state.total for state in self.states]).sum(0)  # (D,)
        count = sum(len(state) for state in self.states)
        return F.normalize((total / count).float(), dim=0)

    def segment_embeddings(self) -> torch.Tensor:
        """One pooled embedding per segment (paragraph), L2-normalised. (N, D)"""
        totals = torch.stack([state.total for state in self.states])  # (N, D)
        counts = torch.tensor([max(len(state), 1) for state in self.states])  # (N,)
        return F.normalize((totals / counts.unsqueeze(1)).float(), dim=1)

    def _build(self, index: int) -> SegmentState:
        return self.engine.build(self.document.model_input(self.document.segments[index]))
