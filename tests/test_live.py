"""A live document: text edits reach only the segments they touch, whatever they do to them."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_segments import prose
from tests.test_tokens import edits, texts
from tests.vq import minilm_vq, tiny_vq
from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.live import MERGE_SPAN, Batch, LiveDocument
from vqedit.engine.model import full_pass_macs
from vqedit.lab.edits.atomic import KINDS, random_edit
from vqedit.lab.verify import verify
from vqedit.text.edit import Edit, EditError, apply_all

TEXT = ("The council met on Monday.\n\nIts budget rose by ten percent, the mayor said.\n\n"
        "Schools and roads will get most of it.")


@pytest.fixture(scope="module")
def engine(minilm):
    return IncrementalEngine(minilm_vq(minilm.model, minilm.tokenizer))


def assert_matches_fresh_document(live: LiveDocument) -> None:
    """Every state verifies, and the segments hold exactly a fresh document's model inputs."""
    fresh = LiveDocument(live.engine, live.document.tokenizer, live.text)
    assert [s.ids.tolist() for s in live.states] == [s.ids.tolist() for s in fresh.states]
    for state in live.states:
        assert verify(live.engine, state).exact()


def test_typing_inside_a_paragraph_edits_only_its_segment(engine, wordpiece):
    live = LiveDocument(engine, wordpiece, TEXT)
    first, _, last = live.states
    stats = live.apply(Edit(TEXT.index("ten"), TEXT.index("ten") + 3, "twelve"))
    assert stats.rebuilt == 0 and len(stats.edited) == 1
    assert live.states[0] is first and live.states[2] is last
    assert_matches_fresh_document(live)


def test_a_typed_paragraph_break_splits_only_that_segment(engine, wordpiece):
    live = LiveDocument(engine, wordpiece, TEXT)
    first, _, last = live.states
    at = TEXT.index(" the mayor")
    stats = live.apply(Edit(at, at + 1, "\n\n"))
    assert stats.rebuilt == 2 and len(live.states) == 4
    assert live.states[0] is first and live.states[3] is last
    assert_matches_fresh_document(live)


def test_deleting_a_paragraph_break_merges_two_segments(engine, wordpiece):
    live = LiveDocument(engine, wordpiece, TEXT)
    first = live.states[0]
    at = TEXT.index("\n\nSchools")
    stats = live.apply(Edit(at, at + 2, " "))
    assert stats.rebuilt == 1 and len(live.states) == 2 and live.states[0] is first
    assert_matches_fresh_document(live)


def test_pasting_paragraphs_and_emptying_the_document(engine, wordpiece):
    live = LiveDocument(engine, wordpiece, TEXT)
    live.apply(Edit(0, 0, "A pasted paragraph.\n\nAnd another one.\n\n"))
    assert len(live.states) == 5
    assert_matches_fresh_document(live)
    live.apply(Edit(0, len(live.text), ""))
    assert live.states == [] and live.text == ""
    live.apply(Edit(0, 0, "Fresh start."))
    assert_matches_fresh_document(live)


def test_a_bad_edit_is_refused_and_changes_nothing(engine, wordpiece):
    live = LiveDocument(engine, wordpiece, TEXT)
    before = [s.ids.tolist() for s in live.states]
    with pytest.raises(EditError):
        live.apply(Edit(5, len(TEXT) + 1, "x"))
    assert live.text == TEXT and [s.ids.tolist() for s in live.states] == before


@given(text=texts, data=st.data())
@settings(max_examples=25)
def test_random_text_edits_keep_every_segment_exact(engine, wordpiece, text, data):
    live = LiveDocument(engine, wordpiece, text)
    for _ in range(data.draw(st.integers(1, 6))):
        live.apply(data.draw(edits(live.text)))
    assert_matches_fresh_document(live)


def test_compaction_gives_the_canonical_document_embedding(engine, wordpiece):
    live = LiveDocument(engine, wordpiece, TEXT)
    rng = random.Random(0)
    for _ in range(20):
        live.apply(random_edit(live.text, rng, KINDS, ["budget", "city", "x"]))
    live.compact()
    fresh = LiveDocument(engine, wordpiece, live.text)
    assert torch.allclose(live.embedding(), fresh.embedding(), atol=1e-6)
    assert torch.allclose(live.segment_embeddings(), fresh.segment_embeddings(), atol=1e-6)


def test_an_edit_early_in_a_long_paragraph_without_sentences_rebuilds_few_segments(wordpiece):
    """The cuts after an edit re-synchronise (engine/segments.py), so the segments past the
    next cut or two keep their states; cuts at the window would all move and be rebuilt."""
    engine = IncrementalEngine(tiny_vq("bert"))  # a window of 62 tokens
    live = LiveDocument(engine, wordpiece, prose(random.Random(0), 1500, None))
    assert len(live.states) > 20
    rng = random.Random(1)
    for _ in range(5):
        at = live.text.index(" ", rng.randrange(100))
        stats = live.apply(Edit(at, at, " budget"))
        assert stats.rebuilt <= 3, f"{stats.rebuilt} of {len(live.states)} segments rebuilt"
    assert_matches_fresh_document(live)


def assert_results_match_fresh(live: LiveDocument) -> None:
    """Pooled results (read without computing evicted segments again) equal a fresh pass's."""
    fresh = LiveDocument(live.engine, live.document.tokenizer, live.text)
    if fresh.document.segments:
        assert torch.dot(live.embedding(), fresh.embedding()) >= 1 - 1e-6
        cosines = (live.segment_embeddings() * fresh.segment_embeddings()).sum(1)
        assert bool((cosines >= 1 - 1e-6).all())


def test_an_evicted_segment_keeps_its_results_and_is_computed_again_when_edited(
        engine, wordpiece):
    live = LiveDocument(engine, wordpiece, TEXT)
    held = live.nbytes()
    assert [r.index for r in live.resident()] == [0, 1, 2]  # least recently used first
    freed = live.evict(1)
    assert freed > 0 and live.nbytes() == held - freed and live.evict(1) == 0
    assert [r.index for r in live.resident()] == [0, 2]
    assert_results_match_fresh(live)
    first, last = live.resident()[0], live.resident()[1]
    stats = live.apply(Edit(TEXT.index("ten"), TEXT.index("ten") + 3, "twelve"))
    assert stats.restored == 1 and stats.rebuilt == 1 and not stats.edited and stats.macs > 0
    assert [r.index for r in live.resident()] == [0, 2, 1]  # the edited one is the newest
    assert live.resident()[0] == first and live.resident()[1] == last  # untouched
    assert_matches_fresh_document(live)


@given(text=texts, data=st.data())
@settings(max_examples=10)
def test_random_edits_and_evictions_keep_results_and_states_exact(engine, wordpiece, text,
                                                                  data):
    live = LiveDocument(engine, wordpiece, text)
    for _ in range(data.draw(st.integers(1, 6))):
        before = (live.embedding(), live.segment_embeddings()) if live.document.segments else None
        for segment in live.resident():
            if data.draw(st.booleans()):
                live.evict(segment.index)
        if before is not None:  # eviction changes no result
            assert torch.equal(live.embedding(), before[0])
            assert torch.equal(live.segment_embeddings(), before[1])
        live.apply(data.draw(edits(live.text)))
        fresh = LiveDocument(engine, wordpiece, live.text)
        assert live.document.segments == fresh.document.segments
        assert live.tokens() == fresh.tokens() and live.dense_macs() == fresh.dense_macs()
        for segment in live.resident():  # read without computing evicted ones again
            assert verify(engine, segment.state).exact()
    live.compact()  # evicted segments too: then the canonical results
    assert_results_match_fresh(live)
    assert_matches_fresh_document(live)


@given(seed=st.integers(0, 10_000))
@settings(max_examples=50)
def test_atomic_edits_change_one_word_or_one_character(seed):
    rng = random.Random(seed)
    text = "one two three"
    edit = random_edit(text, rng, KINDS, ["four"])
    after = text[:edit.start] + edit.text + text[edit.end:]
    assert edit.text in ("", "four", "four ") or len(edit.text) == 1
    assert abs(len(after.split()) - 3) <= 1


def scattered(text: str, words: list[str], replacement: str) -> list[Edit]:
    """Replace every occurrence of each word, back to front so each offset holds as written."""
    at = sorted((i for w in words for i in range(len(text)) if text.startswith(w, i)),
                reverse=True)
    return [Edit(i, i + len(text[i:].split(maxsplit=1)[0]), replacement) for i in at]


def test_a_burst_cheaper_recomputed_costs_one_full_pass_per_changed_segment(engine, wordpiece):
    """A replace-all becomes one edit whose changed segments are computed once each; a segment
    it does not change keeps its state, and the result is a fresh document's."""
    long_first = "Monday, after a long and quiet morning of talks" + " and more talks" * 16 + "."
    text = TEXT.replace("Monday.", long_first) + "\n\nNothing here changes at all."
    live = LiveDocument(engine, wordpiece, text)
    untouched = live.states[3]
    burst = scattered(text, ["The", "Its", "the", "it"], "a")  # farther apart than MERGE_SPAN
    engine.costs.edit_s, engine.costs.build_s_per_token = 1.0, 1e-3  # edits look dear
    assert live.batch(burst).merged
    stats = live.apply_all(burst)
    assert_matches_fresh_document(live)
    assert stats.rebuilt == 3 and not stats.edited and live.states[3] is untouched
    config = engine.model.config
    changed = live.states[:3]
    assert stats.macs <= sum(full_pass_macs(config, len(s), quantized=True) for s in changed)


def test_a_burst_cheaper_edited_stays_incremental(engine, wordpiece):
    live = LiveDocument(engine, wordpiece, TEXT)
    burst = scattered(TEXT, ["ten"], "eleven")
    engine.costs.edit_s, engine.costs.build_s_per_token = 1e-4, 1.0  # edits look cheap
    assert live.batch(burst) == Batch(burst, merged=False)
    stats = live.apply_all(burst)
    assert stats.rebuilt == 0 and len(stats.edited) == 1
    assert_matches_fresh_document(live)


def test_an_edit_dirtying_half_the_segment_is_a_full_pass(engine, wordpiece):
    """Replacing most of a paragraph: the engine recomputes the segment instead of editing it,
    and the state is exactly a full pass."""
    live = LiveDocument(engine, wordpiece, TEXT)
    start, end = TEXT.index("Its"), TEXT.index("said.")
    stats = live.apply(Edit(start, end, "A completely different sentence is here now"))
    [edited] = stats.edited
    state = live.states[1]
    assert edited.dirty == [len(state)] * engine.model.config.n_layers
    assert_matches_fresh_document(live)


def test_a_merged_edit_stopped_between_segments_leaves_them_pending(engine, wordpiece):
    """A newer version may stop a merged edit: the segments not yet computed are pending,
    computed when read, and the document then equals a fresh one."""
    live = LiveDocument(engine, wordpiece, TEXT)
    burst = scattered(TEXT, ["The", "Its", "the", "it"], "a")
    text = TEXT
    for edit in burst:
        text = edit.applied(text)
    asked = []
    stats = live.apply_merged(Edit.between(TEXT, text),
                              between=lambda: asked.append(1) or len(asked) > 1)
    assert stats.rebuilt == 1 and live.pending() and live.text == text
    fresh = LiveDocument(engine, wordpiece, text)
    assert torch.allclose(live.embedding(), fresh.embedding(), atol=1e-5)
    assert not live.pending()
    assert_matches_fresh_document(live)


def test_an_open_that_yields_goes_on_later_and_edits_meanwhile_land(engine, wordpiece):
    """An owner may ask an opening document to yield between segments: at least one segment
    is computed per call, the rest stay pending through edits, and `settle` completes it into
    what a document opened in one go holds."""
    asked = []
    live = LiveDocument(engine, wordpiece, TEXT, between=lambda: asked.append(1) or True)
    assert len(live.document.segments) == 3
    assert live.pending() and len(asked) == 1  # one segment computed, then it yielded
    assert live.settle(between=lambda: True) is False and live.pending()  # one more, one left
    live.apply(Edit(len(TEXT), len(TEXT), " Parks too."))  # lands in the pending one
    assert live.settle() is True and not live.pending()
    assert_matches_fresh_document(live)
    assert_results_match_fresh(live)


@st.composite
def keystroke_runs(draw):
    """A text and a burst of small edits, each on the text the previous one left."""
    text = draw(st.text(alphabet="ab \n", max_size=600))
    edits, current = [], text
    for _ in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, len(current)))
        end = draw(st.integers(start, min(len(current), start + 5)))
        edit = Edit(start, end, draw(st.text(alphabet="abc ", max_size=4)))
        edits.append(edit)
        current = edit.applied(current)
    return text, current, edits


@settings(max_examples=60, deadline=None)
@given(keystroke_runs())
def test_a_batch_leads_to_the_same_text_as_its_edits(wordpiece, run):
    before, after, edits = run
    live = LiveDocument(IncrementalEngine(tiny_vq("bert")), wordpiece, before)
    batch = live.batch(edits, after)
    assert apply_all(before, batch.edits) == after
    assert len(batch.edits) == 1 or batch.edits == edits
    live.apply_all(edits, after=after)
    assert live.text == after


def test_typing_becomes_one_edit_and_distant_edits_stay_apart(engine, wordpiece):
    text = "word " * 200
    live = LiveDocument(engine, wordpiece, text)
    engine.costs.edit_s, engine.costs.build_s_per_token = 1e-4, 1.0  # edits look cheap
    typed = [Edit(10 + i, 10 + i, "a") for i in range(5)]
    assert live.batch(typed) == Batch([Edit(10, 10, "aaaaa")], merged=False)
    apart = [Edit(0, 0, "a"), Edit(MERGE_SPAN + 500, MERGE_SPAN + 500, "b")]
    assert live.batch(apart) == Batch(apart, merged=False)
