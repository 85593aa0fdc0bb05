"""Markdown that is not prose: front matter, fenced code blocks, indented code blocks.

`mask(text)` returns a text of the same length in which those parts are blanked: every character
but line breaks becomes a space. The daemon is sent the masked text, so code never counts toward
the labels and never gets a diagnostic (a blank stretch has no tokens and ends a paragraph), and
every offset is unchanged, so results map back onto the real text as they are.

The rules are CommonMark's, simplified where prose rarely goes:
- front matter: the text starts with a `---` (YAML) or `+++` (TOML) line and a line of the same
  marker (or `...` for YAML) closes it; without a closing line it is prose;
- a fence: a line of at least three backticks or tildes indented by at most three spaces; it is
  closed by a line of at least as many of the same character and nothing else, or by the end
  of the text;
- an indented code block: lines indented by four spaces or a tab that follow a blank line, the
  start of the text or another such line (an indented line right after prose continues that
  paragraph, as in CommonMark). Indented lines inside lists are treated the same way.
"""

import re

LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")
NOT_LINE_BREAK = re.compile(r"[^\r\n]")
FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
INDENTED = re.compile(r"(?: {4}|\t)")
FRONT_MATTER = {"---": ("---", "..."), "+++": ("+++",)}  # opening line → closing lines


def mask(text: str) -> str:
    """`text` with front matter and code blocks blanked, keeping every offset and line break."""
    lines = [m.group() for m in LINE.finditer(text) if m.group()]
    code = _code_lines([line.rstrip("\r\n") for line in lines])
    return "".join(NOT_LINE_BREAK.sub(" ", line) if hidden else line
                   for line, hidden in zip(lines, code, strict=True))


def _code_lines(lines: list[str]) -> list[bool]:
    """For each line (without its break): is it front matter or code?"""
    hidden = [False] * len(lines)
    i = _front_matter_end(lines)
    hidden[:i] = [True] * i
    fence: str | None = None  # the open fence's marker run
    previous_blank = True  # the start of the text counts as after a blank line
    for n in range(i, len(lines)):
        line = lines[n]
        if fence is not None:
            hidden[n] = True
            closing = FENCE.match(line)
            if (closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence)
                    and not line[closing.end():].strip()):
                fence = None
            previous_blank = False
            continue
        opening = FENCE.match(line)
        if opening and not (opening.group(1)[0] == "`" and "`" in line[opening.end():]):
            fence, hidden[n] = opening.group(1), True
        elif INDENTED.match(line) and line.strip() and (previous_blank or hidden[n - 1]):
            hidden[n] = True
        previous_blank = not line.strip()
    return hidden


def _front_matter_end(lines: list[str]) -> int:
    """How many lines the front matter takes (0 when there is none)."""
    if not lines or lines[0].rstrip() not in FRONT_MATTER:
        return 0
    closing = FRONT_MATTER[lines[0].rstrip()]
    for n in range(1, len(lines)):
        if lines[n].rstrip() in closing:
            return n + 1
    return 0
