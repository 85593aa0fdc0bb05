"""Positions: (line, character) in an encoding's code units ↔ code-point offsets.

LSP counts a position's `character` in UTF-16 code units unless client and server agreed on
UTF-8 bytes or UTF-32 code points (the encodings are named as LSP names them: "utf-8",
"utf-16", "utf-32"); the daemon and the engine count code points. Lines end at "\\r\\n", "\\r" or
"\\n" (all three, as the LSP specification says). Conversions go through the line's text encoded
in the agreed codec, so they run at C speed and are exact for characters outside the BMP.

Out-of-range input is clamped, never refused, and reported: a character past the end of its
line means the line's end (the specification's rule, so it is not a problem), a line past the
last means the end of the text, and a character inside a surrogate pair or a UTF-8 sequence
means the start of that character.
"""

import bisect
import re
from dataclasses import dataclass

from .edit import Edit

LINE_BREAK = re.compile(r"\r\n|\r|\n")
# A surrogate code point in a str is always a lone one (a valid pair decodes to one character):
# half a UTF-16 pair that JSON can carry and no text holds.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# codec and bytes per code unit of each position encoding
CODECS = {"utf-8": ("utf-8", 1), "utf-16": ("utf-16-le", 2), "utf-32": ("utf-32-le", 4)}


@dataclass(frozen=True)
class Clamped:
    """An offset and, when the position did not fit the text, why (for the log)."""

    offset: int
    problem: str | None = None


class LineIndex:
    """Where each line of one text starts; immutable, derived anew for every new text."""

    def __init__(self, text: str, encoding: str, starts: list[int] | None = None) -> None:
        self.text = text
        self.encoding = encoding
        self.codec, self.unit = CODECS[encoding]
        # code points; `starts` is only passed by `edited`, which knows them
        self.starts = ([0] + [m.end() for m in LINE_BREAK.finditer(text)] if starts is None
                       else starts)

    def edited(self, edit: Edit) -> "LineIndex":
        """The index of this text after `edit`, scanning only the edited lines: a whole scan
        costs ~2 ms per change at 20,000 words."""
        text = edit.applied(self.text)
        start, end = edit.start, edit.end
        after = start + len(edit.text)  # the first character after the insertion
        # Line starts before `start` stand: the breaks that make them end before the edit. One
        # character either side is scanned again, as a "\r" there may join a "\n" typed beside
        # it, and a break beginning at `after` may end one past it.
        head = self.starts[:max(bisect.bisect_left(self.starts, start), 1)]  # 0 always
        scan = [m.end() for m in LINE_BREAK.finditer(text, max(start - 1, 0), after + 2)
                if start <= m.end() <= after + 1]
        shift = after - end
        tail = [s + shift for s in self.starts[bisect.bisect_right(self.starts, end + 1):]]
        return LineIndex(text, self.encoding, head + scan + tail)

    def line_end(self, line: int) -> int:
        """The offset just before line `line`'s line break (or the end of the text)."""
        if line + 1 >= len(self.starts):
            return len(self.text)
        end = self.starts[line + 1]
        return end - 2 if self.text.endswith("\r\n", 0, end) else end - 1

    def offset(self, line: int, character: int) -> Clamped:
        """The code-point offset of a position, clamped into the text."""
        if line >= len(self.starts):
            return Clamped(len(self.text), f"line {line} is past the last line "
                                           f"({len(self.starts) - 1}); using the end of the text")
        start, end = self.starts[line], self.line_end(line)
        text = self.text[start:end]
        if text.isascii():
            return Clamped(start + min(character, len(text)))
        encoded = text.encode(self.codec)[:character * self.unit]
        # A cut inside a character leaves an incomplete sequence, which "ignore" drops: the
        # position rounds down to the character's start.
        prefix = encoded.decode(self.codec, errors="ignore")
        if len(prefix.encode(self.codec)) != len(encoded):
            return Clamped(start + len(prefix), f"character {character} of line {line} splits "
                                                f"a character")
        return Clamped(start + len(prefix))

    def position(self, offset: int) -> tuple[int, int]:
        """The (line, character) of a code-point offset (0 ≤ offset ≤ len(text))."""
        line = bisect.bisect_right(self.starts, offset) - 1
        start = self.starts[line]
        return line, len(self.text[start:offset].encode(self.codec)) // self.unit
