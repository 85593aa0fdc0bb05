"""Markdown code and front matter are blanked before the daemon sees them; offsets stay."""

from hypothesis import given
from hypothesis import strategies as st

from vqedit.lsp.markdown import mask


def kept(text: str) -> list[str]:
    """The lines of `text` that survive masking (blank lines dropped)."""
    return [line for line in mask(text).splitlines() if line.strip()]


def test_front_matter_yaml_and_toml_are_hidden():
    assert kept("---\ntitle: x\n---\nProse.\n") == ["Prose."]
    assert kept("+++\ntitle = 'x'\n+++\nProse.\n") == ["Prose."]
    assert kept("---\ntitle: x\n...\nProse.\n") == ["Prose."]


def test_unclosed_front_matter_is_prose():
    assert kept("---\nProse after a rule.\n") == ["---", "Prose after a rule."]


def test_fenced_blocks_are_hidden_to_their_closing_fence_or_the_end():
    text = "Before.\n```python\ncode()\n```\nAfter.\n~~~~\nmore\n~~~\nstill code\n~~~~\nEnd.\n"
    assert kept(text) == ["Before.", "After.", "End."]
    assert kept("Prose.\n```\nnever closed\n\nstill code\n") == ["Prose."]


def test_inline_backticks_do_not_open_a_fence():
    assert kept("```inline``` is prose\nnext line\n") == ["```inline``` is prose", "next line"]


def test_indented_code_after_a_blank_line_is_hidden_but_a_continuation_is_not():
    text = "Para one\n    continues here.\n\n    code = 1\n\tcode = 2\n\nPara two.\n"
    assert kept(text) == ["Para one", "    continues here.", "Para two."]


@given(st.lists(st.sampled_from(["---", "```", "~~~", "    x", "\t", "a", " ", "\n", "\r\n",
                                 "\r", "😀"]), max_size=40).map("".join))
def test_masking_keeps_every_offset_and_line_break(text):
    masked = mask(text)
    assert len(masked) == len(text)
    for original, hidden in zip(text, masked, strict=True):
        assert hidden == original or (hidden == " " and original not in "\r\n")
