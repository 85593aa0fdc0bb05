"""An edit of a text: characters [start, end) replaced by a string, offsets in code points.

The one edit type of every layer: the language server turns an LSP range into it, the wire
carries it as a map {start, end, text}, the daemon checks it against its copy of the document,
and the engine re-tokenizes around it.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass


class EditError(ValueError):
    """An edit that does not fit its text; the message gives the text's range."""


@dataclass(frozen=True)
class Edit:
    start: int  # first character replaced
    end: int  # one past the last character replaced (== start for an insertion)
    text: str  # what replaces them

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise EditError(f"edit [{self.start}, {self.end}) does not start at 0 or later and "
                            f"end at or after its start")

    def applied(self, text: str) -> str:
        """`text` with this edit made; EditError if the range is outside it."""
        if self.end > len(text):
            raise EditError(f"edit [{self.start}, {self.end}) is outside the text "
                            f"[0, {len(text)}]")
        return text[:self.start] + self.text + text[self.end:]

    @classmethod
    def between(cls, old: str, new: str) -> "Edit":
        """The one edit turning `old` into `new`: what differs between their common prefix and
        suffix (found by bisection on slice equality, at C speed on long texts)."""
        prefix = _common_length(old, new, lambda s, n: s[:n])
        limit = min(len(old), len(new)) - prefix
        suffix = _common_length(old[len(old) - limit:], new[len(new) - limit:],
                                lambda s, n: s[len(s) - n:])
        return cls(prefix, len(old) - suffix, new[prefix:len(new) - suffix])


def apply_all(text: str, edits: Iterable[Edit]) -> str:
    """`text` after `edits` in order, each on the text the previous one left; EditError naming
    the first edit that does not fit."""
    for i, edit in enumerate(edits):
        try:
            text = edit.applied(text)
        except EditError as e:
            raise EditError(f"edit {i}: {e}") from None
    return text


def moved(start: int, end: int, edits: Iterable[Edit]) -> tuple[int, int] | None:
    """Where [start, end) of a text is after `edits` (in order), or None if one of them
    replaced or inserted text inside it."""
    for edit in edits:
        if edit.start == edit.end and not edit.text:  # changed nothing
            continue
        if edit.end <= start:
            start, end = (offset + len(edit.text) - (edit.end - edit.start)
                          for offset in (start, end))
        elif edit.start < end:
            return None
    return start, end


def _common_length(a: str, b: str, cut: Callable[[str, int], str]) -> int:
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cut(a, mid) == cut(b, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
