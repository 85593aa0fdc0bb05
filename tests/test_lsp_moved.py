"""Results of an older version are moved through the edits made since: a paragraph keeps exactly
its text, or is dropped when an edit replaced or inserted text inside it."""

from hypothesis import given
from hypothesis import strategies as st

from vqedit.daemon.protocol import WireEdit
from vqedit.lsp.documents import moved


@st.composite
def history(draw):
    """A text, a range of it, and random edits applied one after another."""
    text = draw(st.text(alphabet="ab \n", min_size=1, max_size=30))
    start = draw(st.integers(0, len(text) - 1))
    end = draw(st.integers(start + 1, len(text)))
    edits, current = [], text
    for _ in range(draw(st.integers(0, 6))):
        a = draw(st.integers(0, len(current)))
        b = draw(st.integers(a, len(current)))
        edit = WireEdit(a, b, draw(st.text(alphabet="xy\n", max_size=4)))
        edits.append(edit)
        current = current[:edit.start] + edit.text + current[edit.end:]
    return text, start, end, edits, current


@given(history())
def test_a_moved_range_holds_the_same_text(case):
    text, start, end, edits, current = case
    span = moved(start, end, edits)
    if span is not None:
        assert current[span[0]:span[1]] == text[start:end]


@given(history())
def test_a_range_is_dropped_exactly_when_an_edit_reached_inside_it(case):
    """Oracle: follow every character; the range survives if its characters are all still there,
    side by side, with nothing inserted between them."""
    text, start, end, edits, _ = case
    origin: list[int | None] = list(range(len(text)))  # each character's index in `text`
    for edit in edits:
        origin[edit.start:edit.end] = [None] * len(edit.text)
    where = [origin.index(i) if i in origin else None for i in range(start, end)]
    intact = None not in where and where == list(range(where[0], where[0] + len(where)))
    assert moved(start, end, edits) == ((where[0], where[-1] + 1) if intact else None)


def test_insertions_at_the_ends_keep_it_and_inside_drop_it():
    assert moved(5, 10, [WireEdit(5, 5, "ab")]) == (7, 12)  # typed before it
    assert moved(5, 10, [WireEdit(10, 10, "ab")]) == (5, 10)  # typed after it
    assert moved(5, 10, [WireEdit(0, 2, "")]) == (3, 8)
    assert moved(5, 10, [WireEdit(7, 7, "ab")]) is None
    assert moved(5, 10, [WireEdit(9, 12, "")]) is None
