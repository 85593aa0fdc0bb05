"""Cutting a document's tokens into segments: the independent inputs of the model.

A segment is one paragraph (paragraphs end at a blank line). One paragraph per segment keeps an
edit's cost bounded by its paragraph, not the document, and makes paragraph results fall out of
the segment states; the price is that attention does not cross paragraphs, which pooling over
segments makes up for at the document level.

A paragraph longer than the model's window W is cut into pieces, content-defined as in rsync or
FastCDC, so that an edit moves only the cuts near it. Each position between two tokens gets a
score from the tokens around it alone: a top bit when a sentence ends there, below it a hash of
the ids of four tokens on each side (a fixed polynomial, the same in every process). A *peak* is
a position scoring higher than every other within W/4 - 1 on either side, so peaks are at least
W/4 apart and, in prose with sentences under W/4 tokens, always at sentence ends. From a cut at
s the next one is the first peak in [s + W/4, s + W], else the best-scoring position there; no
cut leaves less than W/4 before the paragraph's end.

Why it re-synchronises: past the edit's reach (W/4 + 4 tokens) the peaks are the old ones,
shifted. A cut on a peak is followed by the next peak (none lies closer than W/4), so once the
old and the new cuts each land on a peak they walk the same chain of peaks and agree from the
later of the two, a piece or two after the edit. Only a gap between peaks longer than W forces
cuts that depend on the previous one, and the chain is joined again after the gap.

Why W/4: each piece is a model input and attention does not cross a cut, so pieces should be
long; but peaks must be dense enough that gaps longer than W are rare. Peaks at least W/4 apart
fall about W/2 apart (measured on random words and on prose, W = 64 and 510), and about 1.5% of
gaps exceed W. all-MiniLM-L6-v2 (W = 510) is run on at most 256 tokens by default (its model
card), so pieces of about W/2 are inputs of the length it is used to.
"""

import bisect
import re
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .tokens import TokenEdit, Tokens, matching_ends

# A blank line: a line break, optional spaces (or the CR of a CRLF), another line break.
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r]*\n")
# A sentence ends at . ! or ? followed by white space or the end of the text.
SENTENCE_END = re.compile(r"[.!?](?=\s|\Z)")
HASH_SPAN = 4  # tokens read on each side of a cut: its context, so a common word is no landmark
_PRIME = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: the polynomial's base
_MIX = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's first multiplier


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
    firsts = np.searchsorted(np.frombuffer(tokens.starts, dtype=np.int64),
                             starts[1:]).tolist()  # first token per paragraph
    segments = []
    for lo, hi in zip([0, *firsts], [*firsts, len(tokens)], strict=True):
        if hi - lo > window:
            segments.extend(_pieces(tokens, text, lo, hi, window))
        elif hi > lo:  # most paragraphs fit the window: one piece
            segments.append(Segment(lo, hi))
    return segments


def least_piece(window: int) -> int:
    """The fewest tokens a cut leaves on either side of it (module docstring: why a quarter)."""
    return max(1, window // 4)


def peaks(tokens: Tokens, text: str, lo: int, hi: int, window: int) -> list[int]:
    """The peaks of paragraph [lo, hi) for a window: positions (a cut before that token) that
    score higher than every other within `least_piece(window) - 1` on either side."""
    return _peak_positions(_scores(tokens, text, lo, hi), lo, window)


def _pieces(tokens: Tokens, text: str, lo: int, hi: int, window: int) -> list[Segment]:
    """A paragraph's tokens [lo, hi) in pieces of `least_piece(window)` to `window` tokens (a
    paragraph that fits the window is one piece, however short)."""
    if hi - lo <= window:
        return [Segment(lo, hi)] if hi > lo else []
    least = least_piece(window)
    scores = _scores(tokens, text, lo, hi)  # (hi - lo + 1,) one per cut position lo..hi
    tops = _peak_positions(scores, lo, window)
    pieces, start = [], lo
    while hi - start > window:
        first, last = start + least, min(start + window, hi - least)  # so no piece is short
        k = bisect.bisect_left(tops, first)
        if k < len(tops) and tops[k] <= last:
            end = tops[k]
        else:  # the best cut in range; of equal ones the last, for long pieces in repeated text
            end = last - int(np.argmax(scores[first - lo:last - lo + 1][::-1]))
        pieces.append(Segment(start, end))
        start = end
    pieces.append(Segment(start, hi))
    return pieces


def _peak_positions(scores: np.ndarray, lo: int, window: int) -> list[int]:
    """The peaks strictly inside the paragraph (lo and hi are no cuts), in order."""
    inner = _is_peak(scores, least_piece(window) - 1)[1:-1]  # (hi - lo - 1,)
    return (np.flatnonzero(inner) + lo + 1).tolist()


def _scores(tokens: Tokens, text: str, lo: int, hi: int) -> np.ndarray:
    """Per cut position lo..hi, a 64-bit score read from the tokens around it alone: the top bit
    says the token before it ends a sentence, the rest hash the ids of HASH_SPAN tokens on each
    side (ids beyond the paragraph read as 0, so its ends are content too)."""
    ids = np.zeros(hi - lo + 2 * HASH_SPAN, dtype=np.uint64)  # (hi - lo + 2 HASH_SPAN,)
    ids[HASH_SPAN:HASH_SPAN + hi - lo] = tokens.ids[lo:hi]
    n = hi - lo + 1
    h = np.zeros(n, dtype=np.uint64)  # (n,) position i reads ids[i : i + 2 HASH_SPAN]
    for j in range(2 * HASH_SPAN):  # a polynomial over the ids, then a mix to spread its bits
        h = h * _PRIME + ids[j:j + n]
    h ^= h >> np.uint64(33)
    h *= _MIX
    h ^= h >> np.uint64(29)
    sentence = np.zeros(n, dtype=np.uint64)  # (n,) 1 after a token that ends a sentence
    for m in SENTENCE_END.finditer(text, tokens.starts[lo], tokens.ends[hi - 1]):
        i = bisect.bisect_left(tokens.ends, m.end(), lo, hi)
        if i < hi and tokens.ends[i] == m.end():
            sentence[i + 1 - lo] = 1
    return (sentence << np.uint64(63)) | (h >> np.uint64(1))


def _is_peak(scores: np.ndarray, reach: int) -> np.ndarray:
    """Which scores are higher than every other within `reach` on either side (edges padded
    with 0). Two peaks are therefore more than `reach` apart."""
    if reach == 0:
        return np.ones(len(scores), dtype=bool)
    pad = np.zeros(reach, np.uint64)
    padded = np.concatenate([pad, scores, pad])  # (len(scores) + 2 reach,)
    windows = sliding_window_view(padded, reach)  # (len(scores) + reach + 1, reach)
    left = windows[:len(scores)].max(axis=1)  # the `reach` scores before each
    right = windows[reach + 1:].max(axis=1)  # the `reach` scores after each
    return (scores > left) & (scores > right)


def diff_segments(old: list[Segment], new: list[Segment], edit: TokenEdit) -> SegmentEdit:
    """Which old segments an edit replaced: all but the unchanged ones at both ends.

    A segment is unchanged when it lies wholly before (or after) the edited tokens and its
    token range is the same (after, shifted by the edit's change in length).
    """
    shift = len(edit.new) - (edit.end - edit.start)
    # Compared as (start, end) pairs: a shifted Segment for every later one cost ~0.3 ms.
    before = [(s.start, s.end) if s.end <= edit.start else None for s in old]
    after = [(s.start + shift, s.end + shift) if s.start >= edit.end else None for s in old]
    head, tail = matching_ends(before, after, [(s.start, s.end) for s in new])
    return SegmentEdit(head, len(old) - tail, len(new) - tail)
