"""Markdown that is not prose: YAML front matter, fenced code blocks, indented code blocks.

`mask(text)` returns a text of the same length in which those parts are blanked: every character
but line breaks becomes a space. The daemon is sent the masked text, so code never counts toward
the labels and never gets a diagnostic (a blank stretch has no tokens and ends a paragraph), and
every offset is unchanged, so results map back onto the real text as they are.

What is code is CommonMark's answer, from markdown-it-py's block parser: the lines (`token.map`)
of its `fence`, `code_block` and `front_matter` tokens (mdit-py-plugins: a first line of `---`,
closed by `---` or `...`; unclosed, it is prose). So an indented line that continues a list item
stays prose, and a code block nested in a list is hidden. TOML (`+++`) front matter is not
recognised: the plugin reads YAML's only, and Hugo's TOML header is rare in prose.

Parsing the whole text costs about 2 ms for 2,000 words and 50 ms for 20,000 (docs/lsp.md), too
much per keystroke, so `remask` updates a mask for one edit. Most keystrokes change words inside
one line of prose, which cannot change which lines are code: the line starts with a letter
before and after (so it opens or closes no fence and no block but a paragraph, and keeps its
indentation, which decides the lists and indented code it belongs to), it holds no `<`, `>`
(which end HTML blocks), `[` or `]`, the text has no link reference definition (`]:`: where one
ends decides whether an indented line after it is code), and no line break is added or removed.
Such an edit is copied into the mask (blanked on a hidden line); any other is parsed whole.
"""

import re

from markdown_it import MarkdownIt
from mdit_py_plugins.front_matter import front_matter_plugin

from .edit import Edit

LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")  # markdown-it's line breaks: \r\n, \r, \n
NOT_LINE_BREAK = re.compile(r"[^\r\n]")
LINE_BREAK = re.compile(r"[\r\n]")
# A line no edit of which (keeping it so) changes the code around: indentation, a letter, then
# none of the characters that end HTML blocks or build link definitions.
PROSE_LINE = re.compile(r"([ \t]*)[^\W\d_][^<>\[\]\r\n]*")
CODE_TOKENS = {"fence", "code_block", "front_matter"}
# Only the block structure matters: inline parsing (emphasis, links) is most of the time spent.
_PARSER = MarkdownIt("commonmark").use(front_matter_plugin).disable(["inline", "text_join"])


def mask(text: str) -> str:
    """`text` with front matter and code blocks blanked, keeping every offset and line break."""
    lines = [m.group() for m in LINE.finditer(text) if m.group()]
    hidden = [False] * len(lines)
    for token in _PARSER.parse(text):
        if token.type in CODE_TOKENS and token.map is not None:
            first, stop = token.map
            hidden[first:stop] = [True] * (min(stop, len(lines)) - first)
    return "".join(NOT_LINE_BREAK.sub(" ", line) if code else line
                   for line, code in zip(lines, hidden, strict=True))


def remask(text: str, masked: str, edit: Edit) -> str:
    """`mask` of `text` after `edit`, given `masked == mask(text)`: the edit copied into
    `masked` when it stays inside one line of prose, else parsed whole."""
    start, end, inserted = edit.start, edit.end, edit.text
    line_start = max(text.rfind("\n", 0, start), text.rfind("\r", 0, start)) + 1
    found = LINE_BREAK.search(text, end)
    line_end = found.start() if found is not None else len(text)
    line = text[line_start:line_end]
    new_line = line[:start - line_start] + inserted + line[end - line_start:]
    old_prose, new_prose = PROSE_LINE.fullmatch(line), PROSE_LINE.fullmatch(new_line)
    if (old_prose is None or new_prose is None or old_prose.group(1) != new_prose.group(1)
            or LINE_BREAK.search(text, start, end) is not None or "]:" in text):
        return mask(edit.applied(text))  # the new text, built only here
    hidden = masked[line_start:line_end] != line  # a non-blank line is blanked or kept whole
    return Edit(start, end, " " * len(inserted) if hidden else inserted).applied(masked)
