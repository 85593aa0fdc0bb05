"""Segments: one per paragraph, never over the window; edits report the segments they touch."""

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_tokens import edits
from vqedit.engine.document import Document
from vqedit.engine.segments import Segment, cut_segments
from vqedit.engine.tokens import TextEdit

PARAS = "One short paragraph.\n\nA second one, a little longer.\r\n\r\nThird.\n \nFourth."


def words(doc: Document, segment: Segment) -> str:
    return doc.tokenizer.backend.decode(doc.tokens.ids[segment.start:segment.end])


def test_paragraphs_become_segments(wordpiece):
    doc = Document(wordpiece, PARAS, max_positions=512)
    assert [words(doc, s) for s in doc.segments] == [
        "one short paragraph.", "a second one, a little longer.", "third.", "fourth."]


def test_long_paragraphs_are_cut_into_pieces_of_a_quarter_to_a_whole_window(wordpiece):
    doc = Document(wordpiece, "word " * 50 + "\n\n" + "x", max_positions=12)  # window 10
    *pieces, last = doc.segments
    assert sum(len(s) for s in pieces) == 50 and all(2 <= len(s) <= 10 for s in pieces)
    assert words(doc, last) == "x"
    assert all(len(doc.model_input(s)) <= 12 for s in doc.segments)


def test_long_paragraphs_are_cut_after_sentences(wordpiece):
    text = "A short one. " * 3 + "Then a longer sentence follows here. " * 6
    doc = Document(wordpiece, text, max_positions=32)  # window 30
    assert all(words(doc, s).endswith(".") for s in doc.segments[:-1])
    assert all(len(s) <= 30 for s in doc.segments)


def test_an_edit_early_in_a_long_paragraph_keeps_its_later_pieces(wordpiece):
    text = "The first sentence is right here. " * 20  # 7 tokens a sentence: a cut after 28
    doc = Document(wordpiece, text, max_positions=32)
    later = doc.segments[1:]
    edit = doc.apply(TextEdit(4, 4, "very "))
    assert (edit.segments.start, edit.segments.end, edit.segments.new_end) == (0, 1, 1)
    assert doc.segments[1:] == [s.shifted(1) for s in later]


def test_an_edit_touches_only_its_paragraph(wordpiece):
    doc = Document(wordpiece, PARAS, max_positions=512)
    edit = doc.apply(TextEdit(PARAS.index("little"), PARAS.index("little") + 6, "much"))
    assert (edit.segments.start, edit.segments.end, edit.segments.new_end) == (1, 2, 2)


def test_typing_a_blank_line_splits_a_segment(wordpiece):
    doc = Document(wordpiece, PARAS, max_positions=512)
    at = PARAS.index(" a little")
    edit = doc.apply(TextEdit(at, at, "\n\n"))
    assert list(edit.segments.touched) == [1, 2]
    assert (edit.segments.start, edit.segments.end) == (1, 2)
    assert len(doc.segments) == 5


@settings(max_examples=150)
@given(data=st.data(), window=st.integers(3, 40))
def test_segments_after_edits_equal_a_fresh_cut(bpe, data, window):
    text = data.draw(st.lists(st.sampled_from(["word ", "two words. ", "\n\n", "\r\n", "x"]),
                              max_size=40).map("".join))
    doc = Document(bpe, text, max_positions=window + 1)
    for _ in range(4):
        old = list(doc.segments)
        edit = doc.apply(data.draw(edits(doc.text)))
        assert doc.segments == cut_segments(doc.tokens, doc.text, doc.window)
        assert all(len(s) <= window for s in doc.segments)
        kept = old[:edit.segments.start] + old[edit.segments.end:]
        shift = len(edit.tokens.new) - (edit.tokens.end - edit.tokens.start)
        new_kept = doc.segments[:edit.segments.start] + doc.segments[edit.segments.new_end:]
        assert [s.shifted(shift) if s.start >= edit.tokens.end else s for s in kept] == new_kept
