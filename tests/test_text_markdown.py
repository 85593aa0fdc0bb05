"""Markdown code and front matter are blanked before the daemon sees them; offsets stay."""

from hypothesis import given
from hypothesis import strategies as st

from vqedit.text.edit import Edit
from vqedit.text.markdown import mask, remask


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


PIECES = ["a", "b", "word", " ", "\n", "\n\n", "\r\n", "```", "~~~", "```py\n", "    ", "\t", "---",
          "...", "- ", "1. ", "> ", "<!--", "-->", "<div>", "[a]: /u", "'", "é", "😀", "===",
          "```\nab\n", "\n    ab\n"]  # the last two: prose-like lines in code
TYPED = st.one_of(st.sampled_from(["a", "b c", "'", "`", ""]),  # as in prose, and anything
                  st.lists(st.sampled_from(PIECES), max_size=3).map("".join))
EDITS = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 6), TYPED), min_size=1, max_size=25)


@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join), EDITS)
def test_a_mask_updated_edit_by_edit_equals_a_fresh_mask(text, edits):
    """remask, which copies an edit inside a line of prose into the mask instead of parsing,
    gives the fresh mask after every edit: fences, front matter, lists and indented code typed
    and deleted around prose."""
    masked = mask(text)
    for where, length, inserted in edits:
        start = round(where * len(text))
        end = min(start + length, len(text))
        masked = remask(text, masked, Edit(start, end, inserted))
        text = text[:start] + inserted + text[end:]
        assert masked == mask(text), (text, start, end, inserted)


@given(st.integers(0, 60), st.sampled_from(["a", "x", "é", " the", ""]))
def test_typing_in_prose_next_to_code_blocks_equals_a_fresh_mask(position, inserted):
    """The common keystroke, which remask copies, on a text where every kind of code is near."""
    text = ("---\ntitle: x\n---\nProse line one\n```\ncode here\n```\n\n    indented code\n\n"
            "- Item text\n  more item\n> quoted words\nLast words\n")
    start = min(position, len(text))
    end = min(start + 1, len(text))
    new_text = text[:start] + inserted + text[end:]
    assert remask(text, mask(text), Edit(start, end, inserted)) == mask(new_text)


def test_ending_a_link_definition_in_a_line_of_prose_reveals_the_code_after_it():
    """Why remask parses whole any text with a link definition: typing " more" after its
    destination makes it a paragraph, which the indented line then continues."""
    text = "[foo]:\nurl\n    code\n"
    new_text = "[foo]:\nurl more\n    code\n"
    assert mask(new_text) != mask(text)
    assert remask(text, mask(text), Edit(10, 10, " more")) == mask(new_text)
