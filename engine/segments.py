"""Cutting a document's tokens into segments: the independent inputs of the model.

A segment is one paragraph (paragraphs end at a blank line). A paragraph longer than the model's
window is cut into pieces that end at sentence ends where possible. One paragraph per segment
keeps an edit's cost bounded by its paragraph, not the document, and makes paragraph results
fall out of the segment states; the price is that attention does not cross paragraphs, which
pooling over segments makes up for at the document level.
"""

import bisect
import re
from dataclasses import dataclass

from .tokens import TokenEdit, Tokens, matching_ends

# A blank line: a line break, optional spaces (or the CR of a CRLF), another line break.
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")


@dataclass(frozen=True)
class Segment:
    start: int  # first token (index into the document's tokens)
    end: int  # one past the last token

    def __len__(self) -> int:
        return self.end - self.start

    def shifted(self, by: int) -> "Segment":
        return Segment(self.start + by, self.end + by)


@dataclass(frozen=True)
class SegmentEdit:
    """Old segments [start, end) were replaced by new segments [start, new_end)."""

    start: int
    end: int
    new_end: int

    @property
    def touched(self) -> range:
        """Indices, in the new segment list, of segments whose state must be (re)computed."""
        return range(self.start, self.new_end)


def paragraph_starts(text: str) -> list[int]:
    """Character offsets where paragraphs begin; the first is always 0."""
    return [0] + [m.end() for m in PARAGRAPH_BREAK.finditer(text)]


def cut_segments(tokens: Tokens, text: str, window: int) -> list[Segment]:
    """One segment per paragraph that has tokens; paragraphs over `window` tokens are cut."""
    if window < 1:
        raise ValueError(f"window must hold at least one token, got {window}")
    starts = paragraph_starts(text)
    # A token belongs to the paragraph its first character is in; a token that spans a blank
    # line (byte-level BPE keeps "\n\n" whole) stays with the paragraph it starts in.
    firsts = [bisect.bisect_left(tokens.starts, s) for s in starts[1:]]  # first token per paragraph
    segments = []
    for lo, hi in zip([0, *firsts], [*firsts, len(tokens)], strict=True):
        segments.extend(_pieces(tokens, text, lo, hi, window))
    return segments


def _pieces(tokens: Tokens, text: str, lo: int, hi: int, window: int) -> list[Segment]:
    """A paragraph's tokens [lo, hi) in pieces of at most `window` tokens.

    A piece ends after the last sentence that fits when that is in its second half, so an edit
    early in a long paragraph moves no later cut unless it pushes that sentence out of the
    window; a piece with no sentence end there ends at the window.
    """
    pieces, start = [], lo
    while hi - start > window:
        end = start + window
        end = next((i + 1 for i in range(end - 1, start + window // 2 - 1, -1)
                    if _ends_sentence(tokens, text, i)), end)
        pieces.append(Segment(start, end))
        start = end
    if hi > start:
        pieces.append(Segment(start, hi))
    return pieces


def _ends_sentence(tokens: Tokens, text: str, i: int) -> bool:
    """Token i ends with . ! or ? and white space (or the end of the text) follows it."""
    end = tokens.ends[i]
    return text[end - 1] in ".!?" and (end == len(text) or text[end].isspace())


def diff_segments(old: list[Segment], new: list[Segment], edit: TokenEdit) -> SegmentEdit:
    """Which old segments an edit replaced: all but the unchanged ones at both ends.

    A segment is unchanged when it lies wholly before (or after) the edited tokens and its
    token range is the same (after, shifted by the edit's change in length).
    """
    shift = len(edit.new) - (edit.end - edit.start)
    before = [s if s.end <= edit.start else None for s in old]
    after = [s.shifted(shift) if s.start >= edit.end else None for s in old]
    head, tail = matching_ends(before, after, new)
    return SegmentEdit(head, len(old) - tail, len(new) - tail)
