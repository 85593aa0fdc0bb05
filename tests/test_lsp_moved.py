"""Results of an older version are moved through the edits made since: a paragraph keeps exactly
its text, or is dropped when an edit replaced or inserted text inside it; the edits kept for
that are bounded, whether results come or not."""

from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types

from vqedit.daemon.protocol import Paragraph, Results
from vqedit.lsp.documents import Documents
from vqedit.text.edit import Edit, moved


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
        edit = Edit(a, b, draw(st.text(alphabet="xy\n", max_size=4)))
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
    assert moved(5, 10, [Edit(5, 5, "ab")]) == (7, 12)  # typed before it
    assert moved(5, 10, [Edit(10, 10, "ab")]) == (5, 10)  # typed after it
    assert moved(5, 10, [Edit(0, 2, "")]) == (3, 8)
    assert moved(5, 10, [Edit(7, 7, "ab")]) is None
    assert moved(5, 10, [Edit(9, 12, "")]) is None


@settings(max_examples=150)
@given(data=st.data(), kept=st.integers(1, 5))
def test_with_a_daemon_behind_at_most_kept_edits_stay_and_accepted_results_still_fit(data, kept):
    """Changes come, results for any earlier revision come late or never: the server keeps at
    most `kept` edits, refuses results it could no longer move, and moves the rest exactly."""
    documents = Documents(kept_edits=kept)
    document = documents.open(types.TextDocumentItem("file:///a.txt", "plaintext", 1, "ab ab"))
    texts = {document.revision: document.masked}  # every revision's text
    for _ in range(data.draw(st.integers(1, 20))):
        if data.draw(st.booleans()):
            text = document.text
            a = data.draw(st.integers(0, len(text)))
            b = data.draw(st.integers(a, len(text)))
            text = text[:a] + data.draw(st.text(alphabet="xy \n", max_size=3)) + text[b:]
            documents.change(document, document.version + 1,
                             [types.TextDocumentContentChangeWholeDocument(text)])
            texts[document.revision] = document.masked
        else:
            revision = data.draw(st.sampled_from(sorted(texts)))
            old = texts[revision]
            start = data.draw(st.integers(0, len(old)))
            end = data.draw(st.integers(start, len(old)))
            results = Results(document.uri, revision, "x", {"x": 1.0},
                              [Paragraph(start, end, "x", 1.0)], exact=True)
            if document.accepts(results):
                document.take(results)
                document.published = revision
                for paragraph in document.paragraphs(results):
                    assert document.masked[paragraph.start:paragraph.end] == old[start:end]
            else:
                assert revision < max(document.published, document.movable)
        assert len(document.edits) <= kept
        assert document.results is None or document.results.version >= document.movable
