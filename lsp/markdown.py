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
"""

import re

from markdown_it import MarkdownIt
from mdit_py_plugins.front_matter import front_matter_plugin

LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")  # markdown-it's line breaks: \r\n, \r, \n
NOT_LINE_BREAK = re.compile(r"[^\r\n]")
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
