"""Coalescing a document's pending edits: the edits the worker applies give the accepted text."""

from hypothesis import given
from hypothesis import strategies as st

from vqedit.daemon.scheduler import MERGE_SPAN, coalesce
from vqedit.text.edit import Edit


def apply(text: str, edits: list[Edit]) -> str:
    for edit in edits:
        text = edit.applied(text)
    return text


@st.composite
def edit_runs(draw):
    text = draw(st.text(alphabet="ab \n", max_size=600))
    edits, current = [], text
    for _ in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, len(current)))
        end = draw(st.integers(start, min(len(current), start + 5)))
        edit = Edit(start, end, draw(st.text(alphabet="abc ", max_size=4)))
        edits.append(edit)
        current = apply(current, [edit])
    return text, current, edits


@given(edit_runs())
def test_coalesced_edits_give_the_same_text(run):
    before, after, edits = run
    merged = coalesce(before, after, edits)
    assert apply(before, merged) == after
    assert len(merged) == 1 or merged == edits


def test_typing_becomes_one_edit_and_distant_edits_stay_apart():
    text = "x" * 1000
    typed = [Edit(10 + i, 10 + i, "a") for i in range(5)]
    assert coalesce(text, apply(text, typed), typed) == [Edit(10, 10, "aaaaa")]
    apart = [Edit(0, 0, "a"), Edit(MERGE_SPAN + 500, MERGE_SPAN + 500, "b")]
    assert coalesce(text, apply(text, apart), apart) == apart
