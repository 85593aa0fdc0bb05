"""Segments: one per paragraph, never over the window; edits report the segments they touch;
long paragraphs are cut where their content says, so an edit moves only the cuts near it."""

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_tokens import edits
from vqedit.engine.document import Document
from vqedit.engine.segments import HASH_SPAN, Segment, cut_segments, least_piece, peaks
from vqedit.text.edit import Edit

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
    edit = doc.apply(Edit(4, 4, "very "))
    assert (edit.segments.start, edit.segments.end, edit.segments.new_end) == (0, 1, 1)
    assert doc.segments[1:] == [s.shifted(1) for s in later]


def test_an_edit_touches_only_its_paragraph(wordpiece):
    doc = Document(wordpiece, PARAS, max_positions=512)
    edit = doc.apply(Edit(PARAS.index("little"), PARAS.index("little") + 6, "much"))
    assert (edit.segments.start, edit.segments.end, edit.segments.new_end) == (1, 2, 2)


def test_typing_a_blank_line_splits_a_segment(wordpiece):
    doc = Document(wordpiece, PARAS, max_positions=512)
    at = PARAS.index(" a little")
    edit = doc.apply(Edit(at, at, "\n\n"))
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


# Words that WordPiece keeps whole: one token each, and "." one more.
WORDS = ["the", "council", "met", "on", "monday", "its", "budget", "rose", "by", "ten", "percent",
         "mayor", "said", "schools", "and", "roads", "will", "get", "most", "of", "it", "after",
         "a", "long", "debate", "members", "voted", "for", "new", "plan", "city", "centre"]


def prose(rng: random.Random, words: int, sentence: tuple[int, int] | None) -> str:
    """Random words; with `sentence` = (fewest, most) words per sentence, sentences of them."""
    if sentence is None:
        return " ".join(rng.choice(WORDS) for _ in range(words))
    out = []
    while len(out) < words:
        out += [rng.choice(WORDS) for _ in range(rng.randint(*sentence))]
        out[-1] += "."
    return " ".join(out)


@st.composite
def word_edits(draw, text: str, within: int) -> Edit:
    """Insert, delete or replace up to three words among the first `within` words."""
    bounds = [i for i, c in enumerate(text) if c == " "][:within]
    start = draw(st.sampled_from(bounds))
    end = text.find(" ", start + 1)
    for _ in range(draw(st.integers(0, 2))):
        end = text.find(" ", end + 1)
    new = " " + " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)))
    kind = draw(st.sampled_from(["insert", "delete", "replace"]))
    return {"insert": Edit(start, start, new), "delete": Edit(start, end, ""),
            "replace": Edit(start, end, new)}[kind]


@settings(max_examples=60)
@given(rng=st.randoms(use_true_random=False), window=st.integers(32, 128),
       count=st.integers(1, 1500), sentence=st.sampled_from([None, (3, 5), (10, 40)]))
def test_pieces_tile_a_paragraph_within_a_quarter_to_a_whole_window(wordpiece, rng, window,
                                                                     count, sentence):
    text = prose(rng, count, sentence) + "\n\nNext paragraph."
    doc = Document(wordpiece, text, max_positions=window + 2)
    *pieces, last = doc.segments
    assert words(doc, last) == "next paragraph."
    assert [s.start for s in pieces[1:]] == [s.end for s in pieces[:-1]]
    assert (pieces[0].start, pieces[-1].end) == (0, last.start)
    assert all(len(s) <= window for s in pieces)
    if len(pieces) > 1:
        assert all(len(s) >= least_piece(window) for s in pieces)
    if sentence == (3, 5):  # sentences shorter than a quarter window: every cut at a sentence end
        assert all(doc.text[doc.tokens.ends[s.end - 1] - 1] == "." for s in pieces)


@settings(max_examples=60)
@given(rng=st.randoms(use_true_random=False), sentence=st.sampled_from([None, (4, 12), (20, 60)]),
       data=st.data())
def test_cuts_a_few_windows_after_an_edit_are_unchanged(wordpiece, rng, sentence, data):
    """Past the edit's reach, peaks are the old ones, shifted. While they are at most 3/4 of a
    window apart the old and the new cuts each land on one within a window and then step from
    peak to peak, so both hold every cut from two windows past that reach on. (Text without
    peaks there, such as one word repeated, has cuts that depend on the previous one.)"""
    window = 64
    doc = Document(wordpiece, prose(rng, 8 * window, sentence), max_positions=window + 2)
    old = [s.end for s in doc.segments]
    change = doc.apply(data.draw(word_edits(doc.text, within=window))).tokens
    shift = len(change.new) - (change.end - change.start)
    reach = change.start + len(change.new) + least_piece(window) + HASH_SPAN
    later = [p for p in peaks(doc.tokens, doc.text, 0, len(doc.tokens), window) if p >= reach]
    steps = [reach, *later[:1 + sum(p < reach + 2 * window for p in later)]]
    if steps[-1] >= reach + 2 * window and all(
            b - a <= window - least_piece(window) for a, b in itertools.pairwise(steps)):
        settled = reach + 2 * window
        assert ([c for c in (s.end for s in doc.segments) if c >= settled]
                == [c + shift for c in old if c + shift >= settled])


def test_an_edit_early_in_a_long_paragraph_without_sentences_keeps_all_but_a_few_pieces(
        wordpiece):
    text = prose(random.Random(0), 6000, None)
    doc = Document(wordpiece, text, max_positions=512)
    for at in range(5, 200, 15):
        old = list(doc.segments)
        change = doc.apply(Edit(at, at, " budget")).segments
        assert len(old) > 20 and change.new_end - change.start <= 2
