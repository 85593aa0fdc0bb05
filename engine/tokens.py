"""Text → tokens, and text edits → token edits without re-tokenizing the whole document.

A text edit (a character range replaced by a string) is turned into a token edit (a token range
replaced by new tokens) by re-tokenizing a window around it. The window is cut at *safe cuts*:
positions where a run of ASCII white space begins after a non-space character. Both tokenizer
kinds we ship (BERT's WordPiece, which splits words at white space, and GPT-2's byte-level BPE,
whose pre-tokens never reach across the start of a white-space run) produce no token across
such a cut, so the tokens on either side do not depend on the other side. The window is still
checked: its outermost tokens must line up with the old tokenization, else it grows. Invariant
(property-tested): after any sequence of edits the tokens equal a fresh tokenization.
"""

import bisect
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import tokenizers

from vqedit.text.edit import Edit

CUT_SPACE = " \t\n\r"  # white space that every supported tokenizer treats as a word separator


def spans(values: Iterable[int] = ()) -> array:
    """Character offsets as machine integers: an edit shifts every offset after it, and a list
    of Python ints took 1.5 ms per keystroke to shift at 25,000 tokens."""
    return array("q", values)


@dataclass
class Tokens:
    """Token ids with their character spans [start, end) in the text, in text order."""

    ids: list[int] = field(default_factory=list)
    starts: array = field(default_factory=spans)  # of int64 (`spans`), read as a list of ints
    ends: array = field(default_factory=spans)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, window: slice) -> "Tokens":
        return Tokens(self.ids[window], self.starts[window], self.ends[window])

    def triples(self, shift: int = 0) -> list[tuple[int, int, int]]:
        """(id, start, end) per token, spans moved by `shift` characters."""
        return [(i, s + shift, e + shift)
                for i, s, e in zip(self.ids, self.starts, self.ends, strict=True)]

    def shifted(self, by: int) -> "Tokens":
        starts, ends = spans(self.starts), spans(self.ends)  # copies, shifted in place
        for offsets in (starts, ends):
            np.frombuffer(offsets, dtype=np.int64)[:] += by
        return Tokens(self.ids, starts, ends)


@dataclass(frozen=True)
class TokenEdit:
    start: int  # first old token replaced
    end: int  # one past the last old token replaced (== start for an insertion)
    new: Tokens  # the tokens that replace them, spans in the new text


class Tokenizer:
    """A fast `tokenizers` tokenizer plus the special tokens the model wraps a segment in."""

    def __init__(self, backend: tokenizers.Tokenizer, prefix: list[int], suffix: list[int]) -> None:
        self.backend = backend
        self.prefix = prefix  # e.g. [CLS] for BERT, </s> for OPT
        self.suffix = suffix  # e.g. [SEP] for BERT, nothing for OPT

    @classmethod
    def from_backend(cls, backend: tokenizers.Tokenizer) -> "Tokenizer":
        """Wrap a backend tokenizer; its post-processor tells which special tokens surround text."""
        backend = tokenizers.Tokenizer.from_str(backend.to_str())  # a private copy to reconfigure
        backend.no_truncation()
        backend.no_padding()
        plain = backend.encode("a", add_special_tokens=False).ids
        full = backend.encode("a", add_special_tokens=True).ids
        at = next(i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain)
        return cls(backend, full[:at], full[at + len(plain):])

    @classmethod
    def from_hf(cls, hf_tokenizer) -> "Tokenizer":
        return cls.from_backend(hf_tokenizer.backend_tokenizer)

    def encode(self, text: str) -> Tokens:
        """Tokens of the text alone, without special tokens; spans are character offsets."""
        enc = self.backend.encode(text, add_special_tokens=False)
        return Tokens(list(enc.ids), spans(s for s, _ in enc.offsets),
                      spans(e for _, e in enc.offsets))

    def wrap(self, ids: list[int]) -> list[int]:
        """The model input for a segment of token ids."""
        return self.prefix + ids + self.suffix


def _is_cut(text: str, p: int) -> bool:
    return p == 0 or p == len(text) or (text[p] in CUT_SPACE and not text[p - 1].isspace())


class TokenizedText:
    """A text and its tokens, kept equal to a fresh tokenization as edits arrive."""

    def __init__(self, tokenizer: Tokenizer, text: str = "") -> None:
        self.tokenizer = tokenizer
        self.text = text
        self.tokens = tokenizer.encode(text)

    def apply(self, edit: Edit) -> TokenEdit:
        """Apply a text edit; return the smallest token edit that turns old tokens into new."""
        old, tokens = self.text, self.tokens
        new = edit.applied(old)  # EditError if it does not fit
        delta = len(new) - len(old)
        context = 2
        while True:
            a, b = self._window(edit, context)
            first = bisect.bisect_left(tokens.starts, a)
            inside = tokens[first:bisect.bisect_left(tokens.starts, b)]
            fresh = self.tokenizer.encode(new[a:b + delta]).shifted(a)
            if (a == 0 and b == len(old)) or self._lines_up(inside, fresh, edit, delta, context):
                break
            context *= 2
        token_edit = _smallest_edit(inside, fresh, first, delta)
        self.text = new
        self.tokens = _splice(tokens, token_edit, delta)
        return token_edit

    def _window(self, edit: Edit, context: int) -> tuple[int, int]:
        """A window [a, b) of the old text, cut safely, holding `context` tokens beyond the
        words the edit touches on each side: those are the tokens `_lines_up` compares, and
        the rest of an edited word may tokenize differently however far the window reaches.

        a < edit.start (or 0) and b > edit.end (or the end), so the characters around each cut
        are untouched by the edit and the cut is safe in the new text as well.
        """
        text, tokens = self.text, self.tokens
        # The safe cuts around the touched words: strictly before and after the edit, since
        # text typed at a cut joins the word before it.
        word_start, word_end = max(edit.start - 1, 0), min(edit.end + 1, len(text))
        while word_start > 0 and not self._cut_between_tokens(word_start):
            word_start -= 1
        while word_end < len(text) and not self._cut_between_tokens(word_end):
            word_end += 1
        left = bisect.bisect_right(tokens.ends, word_start) - context  # tokens ending before
        a = min(edit.start - 1, tokens.starts[left] if left >= 0 else 0)
        while a > 0 and not self._cut_between_tokens(a):
            a -= 1
        right = bisect.bisect_right(tokens.starts, word_end) + context - 1
        b = max(edit.end + 1, tokens.ends[right] if right < len(tokens) else len(text))
        while b < len(text) and not self._cut_between_tokens(b):
            b += 1
        return max(a, 0), min(b, len(text))

    def _cut_between_tokens(self, p: int) -> bool:
        """A safe cut that no old token straddles."""
        if not _is_cut(self.text, p):
            return False
        i = bisect.bisect_left(self.tokens.starts, p) - 1
        return i < 0 or self.tokens.ends[i] <= p

    @staticmethod
    def _lines_up(inside: Tokens, fresh: Tokens, edit: Edit, delta: int, context: int) -> bool:
        """The window's outer tokens, away from the edit, equal the old tokens there."""
        before = [t for t in inside.triples() if t[2] <= edit.start][:context]
        after = [t for t in inside.triples(delta) if t[1] >= edit.end + delta][-context:]
        got = fresh.triples()
        return got[:len(before)] == before and (not after or got[-len(after):] == after)


def matching_ends(old_head: list, old_tail: list, new: list) -> tuple[int, int]:
    """How many items old and new share at the start and at the end, without overlap.

    `old_head` and `old_tail` are the old items as compared at each end (the tail ones already
    moved to new coordinates); an item that may not be kept is given as None.
    """
    n = min(len(old_head), len(new))
    head = 0
    while head < n and old_head[head] is not None and old_head[head] == new[head]:
        head += 1
    tail = 0
    while (tail < n - head and old_tail[-1 - tail] is not None
           and old_tail[-1 - tail] == new[-1 - tail]):
        tail += 1
    return head, tail


def _smallest_edit(old: Tokens, new: Tokens, first: int, delta: int) -> TokenEdit:
    """Trim the tokens that old and new share at both ends (same id, same span)."""
    head, tail = matching_ends(old.triples(), old.triples(delta), new.triples())
    return TokenEdit(first + head, first + len(old) - tail, new[head:len(new) - tail])


def _splice(tokens: Tokens, edit: TokenEdit, delta: int) -> Tokens:
    """The old tokens with the edit applied; tokens after it move by `delta` characters."""
    after = tokens[edit.end:].shifted(delta)
    return Tokens(tokens.ids[:edit.start] + edit.new.ids + after.ids,
                  tokens.starts[:edit.start] + edit.new.starts + after.starts,
                  tokens.ends[:edit.start] + edit.new.ends + after.ends)
