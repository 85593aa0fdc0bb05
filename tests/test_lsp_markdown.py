"""Markdown code and front matter are blanked before the daemon sees them; offsets stay."""

from hypothesis import given
from hypothesis import strategies as st

from vqedit.lsp.markdown import mask


def kept(text: str) -> list[str]:
    """The lines of `text` that survive masking (blank lines dropped)."""
    return [line for line in mask(text).splitlines() if line.strip()]


def test_yaml_front_matter_is_hidden():
    assert kept("---\ntitle: x\n---\nProse.\n") == ["Prose."]
    assert kept("---\ntitle: x\n...\nProse.\n") == ["Prose."]


def test_toml_front_matter_is_not_recognised():
    assert kept("+++\ntitle = 'x'\n+++\nProse.\n") == ["+++", "title = 'x'", "+++", "Prose."]


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


def test_indented_continuations_of_list_items_are_prose():
    text = ("- First item\n\n    continues after a blank line.\n"
            "1. Numbered\n\n   and continued.\n")
    assert kept(text) == ["- First item", "    continues after a blank line.", "1. Numbered",
                          "   and continued."]


def test_code_blocks_nested_in_lists_are_hidden():
    text = ("- Item\n\n      indented code in the item\n\n  - nested item\n\n    ```sh\n"
            "    make\n    ```\n\n    nested prose\n")
    assert kept(text) == ["- Item", "  - nested item", "    nested prose"]


def test_fences_in_block_quotes_and_crlf_line_breaks():
    assert kept("> quote\n> ```\n> code\n> ```\n") == ["> quote"]
    assert mask("Prose.\r\n```\r\ncode\r\n```\r\nEnd.") == "Prose.\r\n   \r\n    \r\n   \r\nEnd."


@given(st.lists(st.sampled_from(["---", "```", "~~~", "    x", "\t", "- ", "1. ", "> ", "a", " ",
                                 "\n", "\r\n", "\r", "😀", "\x00"]), max_size=40).map("".join))
def test_masking_keeps_every_offset_and_line_break(text):
    masked = mask(text)
    assert len(masked) == len(text)
    for original, hidden in zip(text, masked, strict=True):
        assert hidden == original or (hidden == " " and original not in "\r\n")
