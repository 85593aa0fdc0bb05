"""The one edit type: `between` finds the edit that turns one text into another, every edit that
does not fit its text is refused with a clear error, and applying edits in order is splicing."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vqedit.text.edit import Edit, EditError, apply_all

TEXTS = st.text(alphabet="ab \n😀", max_size=30)


@given(TEXTS, TEXTS)
def test_between_replaces_what_lies_between_the_common_prefix_and_suffix(old, new):
    prefix = 0  # the oracle: count the shared characters one by one
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while (suffix < min(len(old), len(new)) - prefix
           and old[len(old) - 1 - suffix] == new[len(new) - 1 - suffix]):
        suffix += 1
    edit = Edit.between(old, new)
    assert edit == Edit(prefix, len(old) - suffix, new[prefix:len(new) - suffix])
    assert edit.applied(old) == new


@st.composite
def edits_of(draw, text: str):
    """Random edits, each fitting the text the previous ones left, and that final text."""
    edits = []
    for _ in range(draw(st.integers(0, 5))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, len(text)))
        edit = Edit(start, end, draw(st.text(alphabet="xy\n", max_size=4)))
        text = text[:start] + edit.text + text[end:]  # the oracle: plain splicing
        edits.append(edit)
    return edits, text


@given(st.data(), TEXTS)
def test_apply_all_is_splicing_in_order(data, text):
    edits, expected = data.draw(edits_of(text))
    assert apply_all(text, edits) == expected


def test_an_edit_past_the_text_is_refused_naming_it_and_the_text():
    with pytest.raises(EditError, match=r"edit \[3, 9\) is outside the text \[0, 5\]"):
        Edit(3, 9, "x").applied("hello")
    with pytest.raises(EditError, match=r"^edit 1: edit \[0, 7\) is outside the text \[0, 6\]"):
        apply_all("hello", [Edit(0, 0, "!"), Edit(0, 7, "")])


@pytest.mark.parametrize("start, end", [(-1, 2), (4, 3)])
def test_an_edit_that_starts_before_zero_or_ends_before_it_starts_cannot_be_made(start, end):
    with pytest.raises(EditError, match="does not start at 0 or later"):
        Edit(start, end, "")
