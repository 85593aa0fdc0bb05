"""Incremental tokenization equals fresh tokenization, for WordPiece and byte-level BPE."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vqedit.engine.tokens import TokenizedText
from vqedit.text.edit import Edit, EditError

# Pieces a writer (or a paste) produces, with the awkward cases the property must survive:
# combining marks, emoji with modifiers and joiners, CJK, CRLF, white-space runs, exotic spaces,
# contractions (GPT-2 splits them specially), control characters and long words.
PIECES = ["the", "The", "cat", "naïve", "don't", "it's", " ", "  ", "   ", "\t", "\n", "\n\n",
          "\r\n", "\r\n\r\n", ".", ",", "!?", "'", '"', "-", "e\u0301", "\u0301", "\u0308",
          "😀", "👍🏽", "👩\u200d💻", "中文", "日本語", "\u00a0", "\u3000", "\u200b", "\x00",
          "\x1c",
          "1984", "3.14", "unbelievably", "antidisestablishmentarianism" * 4, "Ångström", "ß"]
pieces = st.one_of(st.sampled_from(PIECES), st.characters(codec="utf-8"))
texts = st.lists(pieces, max_size=30).map("".join)


@st.composite
def edits(draw, text: str) -> Edit:
    start = draw(st.integers(0, len(text)))
    kind = draw(st.sampled_from(["insert", "delete", "replace"]))
    end = start if kind == "insert" else draw(st.integers(start, min(len(text), start + 12)))
    new = "" if kind == "delete" else draw(texts.filter(bool))
    return Edit(start, end, new)


def check_edits(tokenizer, text: str, data) -> None:
    doc = TokenizedText(tokenizer, text)
    for _ in range(data.draw(st.integers(1, 6))):
        old_ids = doc.tokens.ids
        token_edit = doc.apply(data.draw(edits(doc.text)))
        fresh = tokenizer.encode(doc.text)
        assert doc.tokens == fresh, f"tokens drifted from a fresh tokenization of {doc.text!r}"
        spliced = old_ids[:token_edit.start] + token_edit.new.ids + old_ids[token_edit.end:]
        assert spliced == fresh.ids, "the reported token edit does not turn old tokens into new"


@settings(max_examples=300)
@given(text=texts, data=st.data())
def test_wordpiece_incremental_equals_fresh(wordpiece, text, data):
    check_edits(wordpiece, text, data)


@settings(max_examples=300)
@given(text=texts, data=st.data())
def test_byte_level_bpe_incremental_equals_fresh(bpe, text, data):
    check_edits(bpe, text, data)


@pytest.mark.parametrize("tokenizer", ["wordpiece", "bpe"])
def test_edits_at_the_very_start_and_end(tokenizer, request):
    tok = request.getfixturevalue(tokenizer)
    doc = TokenizedText(tok, "")
    for edit in [Edit(0, 0, "Hello"), Edit(5, 5, " world"), Edit(0, 0, "Oh, "),
                 Edit(0, 4, ""), Edit(7, 11, ""), Edit(0, 7, "")]:
        doc.apply(edit)
        assert doc.tokens == tok.encode(doc.text)
    assert doc.text == ""
    assert len(doc.tokens) == 0


def test_one_word_replacement_is_a_small_token_edit(wordpiece):
    doc = TokenizedText(wordpiece, "The cat sat on the mat. " * 50)
    edit = doc.apply(Edit(4, 7, "dog"))
    assert (edit.start, edit.end, len(edit.new)) == (1, 2, 1)


@pytest.mark.parametrize(("word", "at", "typed"), [("Frigidaire.", 2, "u"), ("a new", 1, "o")])
def test_typing_inside_a_word_retokenizes_a_few_words(wordpiece, word, at, typed):
    """A keystroke that changes how the rest of its word splits (Fr|igi|daire → Fru|igi|d|aire),
    or that joins a word typed at its end, re-tokenizes a window of a few words around it,
    not a text that grows with the document."""
    text = "The brands include AEG, Zanussi and " + word + " The company said it " * 200
    doc, seen = TokenizedText(wordpiece, text), []
    encode = wordpiece.encode
    wordpiece.encode = lambda window: seen.append(len(window)) or encode(window)
    try:
        position = text.index(word) + at
        doc.apply(Edit(position, position, typed))
    finally:
        wordpiece.encode = encode
    assert doc.tokens == wordpiece.encode(doc.text)
    assert max(seen) < 200, f"windows of {seen} characters"


def test_out_of_range_edit_is_refused_and_changes_nothing(wordpiece):
    doc = TokenizedText(wordpiece, "short text")
    before = (doc.text, doc.tokens)
    with pytest.raises(EditError, match=r"outside the text \[0, 10\]"):
        doc.apply(Edit(5, 11, "x"))
    with pytest.raises(EditError):
        doc.apply(Edit(6, 5, "x"))
    assert (doc.text, doc.tokens) == before
