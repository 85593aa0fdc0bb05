"""Incremental inference equals full recomputation, in both modes, for every kind of edit."""

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vq import check_incremental, minilm_vq, tiny_vq
from vqedit.engine.incremental import EXP_FLOOR, IncrementalEngine
from vqedit.engine.mode import Mode
from vqedit.engine.weights import SERVING, round_weights
from vqedit.lab.corpus import bbc_articles
from vqedit.lab.verify import verify

TINY_WINDOW = 64  # the tiny models' positions


@pytest.fixture(scope="module", params=[("bert", 1), ("opt", 1), ("bert", 2), ("opt", 4)],
                ids=["bert", "opt", "bert-2-groups", "opt-4-groups"])
def tiny(request):
    """Tiny models, with one codebook per head and with head outputs quantized in groups."""
    family, groups = request.param
    return tiny_vq(family, codebook_groups=groups)


@pytest.fixture(scope="module")
def minilm_kmeans(minilm):
    return minilm_vq(minilm.model, minilm.tokenizer)


@st.composite
def token_edits(draw, vocab: list[int], max_len: int, max_edits: int):
    """A segment's ids and a sequence of edits: insert, delete, replace, anywhere, any size."""
    ids = draw(st.lists(st.sampled_from(vocab), max_size=max_len))
    size, edits = len(ids), []
    for _ in range(draw(st.integers(1, max_edits))):
        if draw(st.integers(0, 9)) == 0:  # the whole segment
            start, end = 0, size
        else:
            start = draw(st.integers(0, size))
            end = draw(st.integers(start, min(size, start + 4)))
        room = max_len - (size - (end - start))
        new = draw(st.lists(st.sampled_from(vocab), max_size=min(4, room)))
        edits.append((start, end, new))
        size += len(new) - (end - start)
    return ids, edits


TINY_VOCAB = list(range(3, 1000))


@given(case=token_edits(TINY_VOCAB, TINY_WINDOW, 12))
@settings(max_examples=40)
def test_exact_mode_equals_a_full_pass_after_every_edit(tiny, case):
    check_incremental(IncrementalEngine(tiny), *case)


@given(case=token_edits(TINY_VOCAB, TINY_WINDOW, 12), delta=st.sampled_from([0.1, 0.5, 2.0]))
@settings(max_examples=30)
def test_sticky_mode_reproduces_a_forced_pass_and_keeps_its_rule(tiny, case, delta):
    check_incremental(IncrementalEngine(tiny, Mode(delta=delta, sweep=4)), *case)


@given(case=token_edits(TINY_VOCAB, TINY_WINDOW, 8))
@settings(max_examples=15)
def test_rows_refreshed_for_drift_stay_exact(tiny, case):
    engine = IncrementalEngine(tiny, Mode(max_updates=2))
    check_incremental(engine, *case)


@pytest.fixture(scope="module", params=["bert", "opt"])
def peaked(request):
    """A tiny model whose attention is so peaked that most softmax weights underflow float32,
    where the engine clamps exp's arguments at EXP_FLOOR."""
    model = tiny_vq(request.param)
    with torch.no_grad():
        for block in model.blocks:  # scores grow 40²-fold
            for projection in (block.attention.q, block.attention.k):
                projection.weight *= 40
                projection.bias *= 40
        ids, positions = torch.arange(3, 63).unsqueeze(0), torch.arange(60.0).unsqueeze(0)
        q, k, _ = model.blocks[0].projections(model.embed(ids, positions))  # (1, T, H, Dh)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    gap = float((scores.amax(-1) - scores.amin(-1)).max())
    assert gap > -EXP_FLOOR + 20, f"scores span only {gap}: the clamp is never exercised"
    return model


@given(case=token_edits(TINY_VOCAB, TINY_WINDOW, 8))
@settings(max_examples=20)
def test_exact_mode_stays_exact_where_softmax_weights_underflow(peaked, case):
    check_incremental(IncrementalEngine(peaked), *case)


def test_empty_segments_and_whole_segment_edits(tiny):
    engine = IncrementalEngine(tiny)
    check_incremental(engine, [], [(0, 0, [5, 6, 7]), (0, 3, []), (0, 0, []), (0, 0, [9]),
                                   (0, 1, list(range(10, 70)))])


def minilm_vocab(tokenizer) -> list[int]:
    return sorted(set(tokenizer.encode(bbc_articles()[1].text).ids))


@given(data=st.data())
@settings(max_examples=8)
def test_minilm_with_kmeans_codebooks_stays_exact(minilm, minilm_kmeans, data):
    vocab = minilm_vocab(minilm.tokenizer)
    ids, edits = data.draw(token_edits(vocab, 96, 6))
    check_incremental(IncrementalEngine(minilm_kmeans), ids, edits)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [Mode(), Mode(delta=0.5)], ids=["exact", "sticky"])
@given(data=st.data())
@settings(max_examples=2)
def test_long_edit_sequences_stay_exact(minilm, minilm_kmeans, mode, data):
    """≥ 200 edits in sequence on a real article: drift must not accumulate."""
    tokens = minilm.tokenizer.encode(bbc_articles()[2].text).ids[:200]
    ids = minilm.tokenizer.wrap(tokens)
    vocab = minilm_vocab(minilm.tokenizer)
    size, edits = len(ids), []
    for _ in range(200):
        start = data.draw(st.integers(1, size - 1))  # between the special tokens
        end = data.draw(st.integers(start, min(size - 1, start + 1)))
        new = data.draw(st.lists(st.sampled_from(vocab), max_size=1 if size < 250 else 0))
        edits.append((start, end, new))
        size += len(new) - (end - start)
    check_incremental(IncrementalEngine(minilm_kmeans, mode), ids, edits)


def test_causal_append_costs_one_token():
    """Appending to an OPT segment computes one row per layer: nothing before it changes."""
    model = tiny_vq("opt")
    engine = IncrementalEngine(model)
    state = engine.build(list(range(3, 43)))
    before = state.snapshot()
    stats = engine.apply(state, 40, 40, [99])
    c = model.config
    size = len(state)
    per_layer = (4 * c.d_model ** 2 + 2 * c.d_model * c.d_ff  # projections, output, MLP
                 + 2 * size * c.d_model  # its attention row over every key it sees
                 + c.n_heads * c.codebook_size * c.head_dim)  # its quantization
    assert stats.dirty == [1] * c.n_layers and stats.flipped == [0] * c.n_layers
    assert stats.macs == c.n_layers * per_layer
    first = torch.arange(40)
    for old, new in zip(before.layers, state.layers, strict=True):
        old, new = old.rows(first), new.rows(first)
        for name in ("m", "s", "heads", "codes"):
            assert torch.equal(getattr(old, name), getattr(new, name))


def test_causal_queries_before_an_edit_are_never_touched():
    model = tiny_vq("opt")
    engine = IncrementalEngine(model)
    state = engine.build(list(range(3, 53)))
    before = state.snapshot()
    engine.apply(state, 30, 32, [7])
    untouched = state.order[:30]
    for old, new in zip(before.layers, state.layers, strict=True):
        old, new = old.rows(untouched), new.rows(untouched)
        for name in ("q", "k", "v", "m", "s", "heads", "codes", "slack", "updates"):
            assert torch.equal(getattr(old, name), getattr(new, name))


def test_snapshot_is_independent_of_later_edits(tiny):
    engine = IncrementalEngine(tiny)
    state = engine.build(list(range(3, 40)))
    snapshot = state.snapshot()
    expected = verify(engine, snapshot)
    engine.apply(state, 5, 9, [1, 2])
    engine.apply(state, 0, 0, [3, 4, 5])
    assert len(snapshot) == 37
    assert verify(engine, snapshot) == expected


def test_edits_outside_the_segment_are_refused_and_change_nothing(tiny):
    engine = IncrementalEngine(tiny)
    state = engine.build(list(range(3, 13)))
    with pytest.raises(ValueError, match=r"edit \[8, 11\) is outside the segment \[0, 10\]"):
        engine.apply(state, 8, 11, [5])
    assert verify(engine, state).exact() and state.ids.tolist() == list(range(3, 13))


def test_a_segment_cannot_outgrow_the_window(tiny):
    engine = IncrementalEngine(tiny)
    state = engine.build(list(range(3, 3 + TINY_WINDOW)))
    with pytest.raises(ValueError, match="does not fit"):
        engine.apply(state, 5, 5, [1])


def test_models_without_codebooks_are_refused(minilm):
    with pytest.raises(ValueError, match="fitted codebooks"):
        IncrementalEngine(minilm.model)


@pytest.mark.parametrize("bad", [dict(delta=-0.1), dict(max_updates=0), dict(sweep=-1)])
def test_bad_modes_are_refused(bad):
    with pytest.raises(ValueError):
        Mode(**bad)


def test_a_served_minilm_state_fits_36_kib_per_token(minilm, minilm_kmeans):
    """In the served format queries, keys and values are kept in bfloat16 (47 KiB in float32)."""
    text = " ".join(a.text for a in bbc_articles()[:3])
    tokens = minilm.tokenizer.encode(text).ids[:510]
    model = round_weights(copy.deepcopy(minilm_kmeans), SERVING)
    state = IncrementalEngine(model).build(minilm.tokenizer.wrap(tokens))
    assert len(state) == 512
    assert state.nbytes() / len(state) <= 36 * 1024


def test_rows_that_moved_less_than_their_slack_are_not_requantized(minilm, minilm_kmeans,
                                                                     monkeypatch):
    """One edit must not cost a codebook search for every token of every layer."""
    tokens = minilm.tokenizer.encode(bbc_articles()[3].text).ids[:126]
    engine = IncrementalEngine(minilm_kmeans, Mode(delta=1.0, sweep=0))
    state = engine.build(minilm.tokenizer.wrap(tokens))
    searched = []
    codebook = type(minilm_kmeans.blocks[0].codebook)
    search = codebook.head_distances
    monkeypatch.setattr(codebook, "head_distances",  # x (H, rows, Dh)
                        lambda self, x, square: searched.append(x.shape[1])
                        or search(self, x, square))
    stats = engine.apply(state, 60, 61, [2307])
    assert sum(searched) < len(state) * len(state.layers) / 4, (searched, stats)
