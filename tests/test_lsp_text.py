"""LSP positions ↔ code points: exact for every encoding, clamped (and said why) when off."""

from hypothesis import given
from hypothesis import strategies as st
from lsprotocol import types
from lsprotocol.types import PositionEncodingKind

from vqedit.lsp.documents import Documents
from vqedit.text.edit import Edit
from vqedit.text.lines import LineIndex

TEXT = "a😀b\r\nsecond\rthird\nlast"  # 😀 is two UTF-16 units and four UTF-8 bytes


def offset(line: int, character: int, encoding=PositionEncodingKind.Utf16):
    return LineIndex(TEXT, encoding).offset(line, character)


def test_characters_count_in_the_negotiated_encoding():
    assert offset(0, 3).offset == 2  # after 😀 in UTF-16 units
    assert offset(0, 5, PositionEncodingKind.Utf8).offset == 2
    assert offset(0, 2, PositionEncodingKind.Utf32).offset == 2
    assert offset(1, 0).offset == TEXT.index("second")
    assert offset(2, 0).offset == TEXT.index("third")
    assert offset(3, 4).offset == len(TEXT)


def test_positions_round_trip():
    for encoding in (PositionEncodingKind.Utf8, PositionEncodingKind.Utf16):
        index = LineIndex(TEXT, encoding)
        for i in range(len(TEXT) + 1):
            if TEXT[i - 1:i + 1] != "\r\n":
                assert index.offset(*index.position(i)).offset == i


def test_a_character_past_the_line_end_is_the_line_end_without_complaint():
    found = offset(0, 99)
    assert found.offset == TEXT.index("\r\n") and found.problem is None


def test_a_line_past_the_end_is_the_end_of_the_text_and_reported():
    found = offset(9, 0)
    assert found.offset == len(TEXT) and "past the last line" in found.problem


def test_half_a_character_rounds_down_and_is_reported():
    found = offset(0, 2)  # between the two UTF-16 units of 😀
    assert found.offset == 1 and "splits a character" in found.problem
    found = offset(0, 3, PositionEncodingKind.Utf8)  # inside its four bytes
    assert found.offset == 1 and "splits a character" in found.problem


@st.composite
def edited_texts(draw):
    """A text of line breaks of every kind and other characters, and a sequence of edits."""
    pieces = st.sampled_from(["a", "😀", "\r", "\n", "\r\n", "é"])
    text = first = "".join(draw(st.lists(pieces, max_size=30)))
    edits = []
    for _ in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, len(text)))
        inserted = "".join(draw(st.lists(pieces, max_size=5)))
        edits.append((start, end, inserted))
        text = text[:start] + inserted + text[end:]
    return first, edits


@given(edited_texts())
def test_an_edited_index_equals_a_fresh_one(text_and_edits):
    """Only the edited lines are scanned again, yet every line start is where a full scan puts
    it: "\\r" and "\\n" joined or split by an edit included."""
    text, edits = text_and_edits
    index = LineIndex(text, PositionEncodingKind.Utf16)
    for start, end, inserted in edits:
        index = index.edited(Edit(start, end, inserted))
        assert index.starts == LineIndex(index.text, PositionEncodingKind.Utf16).starts


def test_a_lone_surrogate_becomes_a_replacement_character_in_the_same_place():
    """Half a UTF-16 pair (JSON can carry one) cannot go to the daemon: it becomes U+FFFD, one
    code unit as it was, so the positions the editor sends after it still fit."""
    documents = Documents()
    document = documents.open(types.TextDocumentItem("file:///a.md", "markdown", 1,
                                                     "ab\ud800cd"))
    assert document.text == document.masked == "ab\ufffdcd"
    end = types.Position(0, 4)  # after "c": a, b, the half pair, c
    documents.change(document, 2, [types.TextDocumentContentChangePartial(
        types.Range(end, end), "\udc00!")])
    assert document.text == document.masked == "ab\ufffdc\ufffd!d"
    assert all(edit.text.isprintable() for edit in document.unsent)
