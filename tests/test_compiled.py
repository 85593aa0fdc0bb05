"""The compiled edit path equals the torch reference it was written from.

Both engines take the same random edit sequences from the same state. In exact mode the codes
must be identical and the final states within 1e-5, except where a decision was a near tie
(either code is right there, and everything after it may differ); in sticky mode both states
must pass the mechanics check (a forced full pass reproduces them, every code obeys the rule).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_incremental import TINY_VOCAB, TINY_WINDOW, token_edits
from tests.vq import tiny_vq
from vqedit.engine._compiled import move_slots
from vqedit.engine.compiled import CompiledLayers
from vqedit.engine.incremental import IncrementalEngine, Mode
from vqedit.engine.verify import NEAR_TIE, verify

OUTPUT_TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=[("bert", 1), ("opt", 1), ("bert", 2), ("opt", 4)],
                ids=["bert", "opt", "bert-2-groups", "opt-4-groups"])
def tiny(request):
    family, groups = request.param
    return tiny_vq(family, codebook_groups=groups)


def near_tie(engine: IncrementalEngine, state) -> bool:
    """Whether any code of the state is a near tie in a full pass forced to its codes."""
    model = engine.model
    forced = model(state.ids.unsqueeze(0), state.positions.unsqueeze(0),
                   codes=state.codes().unsqueeze(1))
    for block, heads in zip(model.blocks, forced.heads, strict=True):
        h = heads[0]  # (T, H, Dh)
        two = block.codebook.distances(h).clamp(min=0).sqrt().topk(2, largest=False).values
        tie = NEAR_TIE * 10 * h.norm(dim=-1).repeat_interleave(block.codebook.groups, dim=-1)
        if bool((two[..., 1] - two[..., 0] <= tie).any()):
            return True
    return False


@given(case=token_edits(TINY_VOCAB, TINY_WINDOW, 12))
@settings(max_examples=40)
def test_exact_mode_compiled_edits_equal_the_torch_reference(tiny, case):
    ids, edits = case
    reference = IncrementalEngine(tiny, compiled=False)
    compiled = IncrementalEngine(tiny, compiled=True)
    expected = reference.build(ids)
    state = expected.snapshot()
    for start, end, new in edits:
        want = reference.apply(expected, start, end, new)
        got = compiled.apply(state, start, end, new)
        assert verify(compiled, state).exact()
        if not torch.equal(state.codes(), expected.codes()):
            assert near_tie(reference, expected) or near_tie(compiled, state)
            return  # after a tie went the other way, the two states may rightly differ
        assert got.dirty == want.dirty
        if len(state):
            assert float((state.hidden() - expected.hidden()).abs().max()) <= OUTPUT_TOLERANCE
        assert torch.allclose(state.total, expected.total, atol=OUTPUT_TOLERANCE * len(state))


@given(case=token_edits(TINY_VOCAB, TINY_WINDOW, 12), delta=st.sampled_from([0.5, 8.0]))
@settings(max_examples=30)
def test_sticky_mode_compiled_edits_keep_the_rule(tiny, case, delta):
    ids, edits = case
    mode = Mode(delta=delta)
    for engine in (IncrementalEngine(tiny, mode, compiled=False),
                   IncrementalEngine(tiny, mode, compiled=True)):
        state = engine.build(ids)
        for number, (start, end, new) in enumerate(edits):
            engine.apply(state, start, end, new)
            verdict = verify(engine, state)
            assert verdict.mechanics(), f"edit {number}: {verdict}"


def test_compiled_edits_count_what_they_compute(tiny):
    """The MAC counter adds what an edit computed: at least the dirty rows' linears, at most
    the reference's count (which also recomputes refreshed rows' queries and decides every
    group of a row whose slack ran out)."""
    ids = list(range(5, 45))
    reference = IncrementalEngine(tiny, compiled=False)
    compiled = IncrementalEngine(tiny, compiled=True)
    a = reference.build(ids)
    b = a.snapshot()
    want = reference.apply(a, 10, 11, [7])
    got = compiled.apply(b, 10, 11, [7])
    c = tiny.config
    per_row = 4 * c.d_model * c.d_model + 2 * c.d_model * c.d_ff  # projections, MLP
    assert sum(got.dirty) * per_row <= got.macs <= want.macs


def test_slot_moves_copy_every_array_along_its_slot_dimension():
    """move_slots copies whole rows (dimension 0) or columns (dimension 1) and refuses slots
    outside an array, changing nothing."""
    rows = np.arange(24, dtype=np.float32).reshape(6, 4)
    columns = np.arange(30, dtype=np.uint8).reshape(5, 6)
    want_rows, want_columns = rows.copy(), columns.copy()
    want_rows[[1, 2]] = want_rows[[5, 4]]
    want_columns[:, [1, 2]] = want_columns[:, [5, 4]]
    move_slots([(rows, 0), (columns, 1)], np.array([1, 2]), np.array([5, 4]))
    assert np.array_equal(rows, want_rows) and np.array_equal(columns, want_columns)
    with pytest.raises(ValueError, match="outside"):  # columns has only 6 slots
        move_slots([(rows, 0), (columns, 1)], np.array([0]), np.array([6]))
    assert np.array_equal(rows, want_rows) and np.array_equal(columns, want_columns)


def test_bad_arrays_are_refused_with_a_clear_error(tiny):
    """A wrong dtype, shape or layout is a ValueError naming the array, never memory misuse."""
    engine = IncrementalEngine(tiny, compiled=True)
    state = engine.build(list(range(5, 25)))
    layers = CompiledLayers(tiny, 0.0)
    size = len(state)
    empty = [(st.k[:, :0].numpy(), st.v[:, :0].numpy()) for st in state.layers]
    args = dict(state=state, rows=torch.tensor([3]), is_new=torch.zeros(size, dtype=torch.bool),
                gone=empty, gone_order=np.zeros(0, dtype=np.int64), rank=torch.arange(size),
                limit=torch.full((size,), 255), turn=torch.zeros(0, dtype=torch.long),
                out=torch.empty(size, tiny.config.d_model))
    for bad, message in [(dict(rows=torch.tensor([3], dtype=torch.int32)), "rows"),
                         (dict(rows=torch.tensor([size + 3])), "rows"),
                         (dict(rows=torch.tensor([4, 3])), "rows"),
                         (dict(rank=torch.arange(size - 1)), "rank"),
                         (dict(rank=torch.arange(size) + 1), "rank"),
                         (dict(out=torch.empty(tiny.config.d_model, size).t()), "out"),
                         (dict(gone=empty[:1]), "per layer"),
                         (dict(gone_order=np.zeros(2, dtype=np.int64)), "gone")]:
        with pytest.raises(ValueError, match=message):
            layers.edit(**{**args, **bad})
    for name, value in [("slot_ids", 10 ** 9), ("slot_positions", 1e6)]:  # not a token, not a
        broken = state.snapshot()  # position: the embedding is refused before any work
        getattr(broken, name)[3] = value
        with pytest.raises(ValueError, match="ids, positions"):
            layers.edit(**{**args, "state": broken})
