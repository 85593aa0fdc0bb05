"""The compiled path equals the torch reference it was written from.

Both engines build the same segment and take the same random edit sequences. In exact mode the
codes must be identical and the final states within 1e-5, except where a decision was a near tie
(either code is right there, and everything after it may differ); in sticky mode both states
must pass the mechanics check (a forced full pass reproduces them, every code obeys the rule).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_incremental import TINY_VOCAB, TINY_WINDOW, token_edits
from tests.vq import check_incremental, tiny_vq
from vqedit.engine import _compiled
from vqedit.engine._compiled import has_vnni, linear, move_slots
from vqedit.engine.compiled import CompiledLayers
from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.mode import Mode
from vqedit.engine.ops import on_grid
from vqedit.engine.weights import FINE_LEVELS, INPUT_LEVELS, round_weights, rounded
from vqedit.lab.verify import NEAR_TIE, verify

OUTPUT_TOLERANCE = 1e-5


@pytest.fixture(scope="module",
                params=[("bert", 1, "float32"), ("opt", 1, "float32"), ("bert", 2, "float32"),
                        ("opt", 4, "float32"), ("bert", 1, "int8"), ("opt", 2, "int8")],
                ids=["bert", "opt", "bert-2-groups", "opt-4-groups", "bert-int8",
                     "opt-2-groups-int8"])
def tiny(request):
    """Tiny models in every weight format; int8 with inputs on the fine grid, where torch and
    the compiled path round alike (the served grid is tested on its own below)."""
    family, groups, format = request.param
    return round_weights(tiny_vq(family, codebook_groups=groups), format, FINE_LEVELS)


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
def test_exact_mode_compiled_passes_and_edits_equal_the_torch_reference(tiny, case):
    ids, edits = case
    reference = IncrementalEngine(tiny, compiled=False)
    compiled = IncrementalEngine(tiny, compiled=True)
    expected = reference.build(ids)
    state = compiled.build(ids)
    if not equal_unless_tied(reference, expected, compiled, state):
        return
    for start, end, new in edits:
        want = reference.apply(expected, start, end, new)
        got = compiled.apply(state, start, end, new)
        assert verify(compiled, state).exact()
        if not equal_unless_tied(reference, expected, compiled, state):
            return
        assert got.dirty == want.dirty


def equal_unless_tied(reference: IncrementalEngine, expected, compiled: IncrementalEngine,
                      state) -> bool:
    """Asserts the two states are equal; False where a near tie went the other way (either
    code is right there, and everything after it may rightly differ)."""
    if not torch.equal(state.codes(), expected.codes()):
        assert near_tie(reference, expected) or near_tie(compiled, state)
        return False
    if len(state):
        assert float((state.hidden() - expected.hidden()).abs().max()) <= OUTPUT_TOLERANCE
    assert torch.allclose(state.total, expected.total, atol=OUTPUT_TOLERANCE * len(state))
    return True


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


@pytest.mark.parametrize("family", ["bert", "opt"])
@pytest.mark.parametrize("delta", [0.0, 8.0])
@given(case=token_edits(TINY_VOCAB, TINY_WINDOW, 12))
@settings(max_examples=15, deadline=None)
def test_on_the_served_input_grid_edits_equal_compiled_full_passes(family, delta, case):
    """At the 127 levels served, after any edits a state is what a compiled full pass computes
    (exact mode), or a compiled pass forced to its codes (sticky mode), and compaction gives the
    canonical pass."""
    model = round_weights(tiny_vq(family, codebook_groups=2), "int8")
    assert {linear.input_levels for block in model.blocks
            for linear in block.linears().values()} == {INPUT_LEVELS}
    check_incremental(IncrementalEngine(model, Mode(delta=delta), compiled=True), *case)


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


def test_a_row_past_its_slack_searches_only_the_groups_beside_the_one_that_ran_out():
    """Under the sticky rule a clean row is decided again when a group runs past its slack;
    only that group's block of eight codebooks is searched (the others keep their codes and
    slack), so a row past its slack in every group costs one more block per eight groups."""
    model = tiny_vq("bert", codebook_groups=4)  # 16 codes per token: two blocks of eight
    c = model.config
    engine = IncrementalEngine(model, Mode(delta=8.0, sweep=0), compiled=True)
    state = engine.build(TINY_VOCAB[:40])
    one, every = state.snapshot(), state.snapshot()
    row = state.order[35]
    one.layers[0].slack[0, row] = -1.0
    every.layers[0].slack[:, row] = -1.0
    # A token typed over itself: no other row moves, so only `row` runs past its slack.
    macs = [engine.apply(s, 3, 4, [TINY_VOCAB[3]]).macs for s in (state, one, every)]
    block = 8 * c.codebook_size * (c.head_dim // c.codebook_groups)
    assert (macs[1] - macs[0], macs[2] - macs[0]) == (block, 2 * block)
    assert torch.equal(one.codes(), state.codes()) and torch.equal(every.codes(), state.codes())
    assert (every.layers[0].slack[:, row] >= 0).all()  # decided again: slack renewed


@given(rows=st.integers(1, 30), d_in=st.integers(1, 70), d_out=st.integers(1, 40),
       format=st.sampled_from(["float32", "int8"]),
       levels=st.sampled_from([INPUT_LEVELS, 2 ** 15 - 1, FINE_LEVELS]),
       seed=st.integers(0, 2 ** 16))
@settings(max_examples=100, deadline=None)
def test_compiled_linears_equal_torch_on_rounded_inputs(rows, d_in, d_out, format, levels, seed):
    """Every kernel of a linear (one, two or three bytes by bytes where the CPU has VNNI,
    float32 otherwise, any number of rows and any width) computes torch's product of the same
    rounded inputs."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(d_out, d_in, generator=generator) * 0.1
    bias = torch.randn(d_out, generator=generator)
    if format == "int8":
        weight = rounded(weight, format)
    x = torch.randn(rows, d_in, generator=generator) * 3
    x[0, : d_in // 2] = 0  # rows with zeros and tiny values round too
    levels = levels if format == "int8" else 0
    want = torch.nn.functional.linear(on_grid(x, levels) if levels else x, weight, bias)
    for vnni in ([True, False] if has_vnni() and format == "int8" else [False]):
        got = torch.from_numpy(linear(weight.numpy(), bias.numpy(), format, levels, x.numpy(),
                                      vnni))
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max())), vnni


def test_rounded_inputs_lie_within_half_a_step_of_their_values():
    """on_grid moves each value by at most half its row's step (max|x| / levels) at any scale,
    and leaves a row of zeros as it is."""
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([1e-30, 1e-3, 1.0, 1e3, 0.0]).unsqueeze(1)
    x = torch.randn(5, 300, generator=generator) * scales
    rounded = on_grid(x, INPUT_LEVELS)
    step = x.abs().amax(1, keepdim=True) / INPUT_LEVELS
    rounding = 2 * torch.finfo(x.dtype).eps * x.abs()  # of the product q·step in float32
    assert bool(((rounded - x).abs() <= step / 2 + rounding).all())
    assert not torch.equal(rounded[:4], x[:4]) and torch.equal(rounded[4], x[4])


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
    """A wrong dtype, shape or layout, or an edit that does not fit the state, is a ValueError
    naming what is wrong, never memory misuse, and the state is left as it was."""
    engine = IncrementalEngine(tiny, compiled=True)
    state = engine.build(list(range(5, 25)))
    layers = CompiledLayers(tiny, 0.0)
    kernel, size = layers.kernel, len(state)
    args = dict(state=state.views().compiled, order=state.order.numpy(), start=3, end=4,
                new_ids=np.array([7]), new_positions=state.positions.numpy(),
                moved=np.zeros(0, dtype=np.int64), codes=None, total=state.total.numpy(),
                sweep=0, sweep_tokens=2, max_updates=255)
    before = state.snapshot()
    for bad, message in [(dict(order=state.order.numpy().astype(np.int32)), "order"),
                         (dict(order=np.zeros(size, dtype=np.int64)), "order"),
                         (dict(start=5, end=4), "start, end"),
                         (dict(end=size + 1), "start, end"),
                         (dict(new_ids=np.array([10 ** 9])), "ids, positions"),
                         (dict(new_ids=np.array([7, 8])), "new_positions"),
                         (dict(new_positions=state.positions.numpy() + 1e6), "ids, positions"),
                         (dict(moved=np.array([3])), "moved"),
                         (dict(moved=np.array([size])), "moved"),
                         (dict(total=state.total.float().numpy()), "total"),
                         (dict(codes=np.zeros((1, 1, 1), dtype=np.uint8)), "codes"),
                         (dict(start=size, end=size, new_ids=np.arange(5, 9),
                               new_positions=np.arange(size + 4, dtype=np.float64)), "reserve")]:
        with pytest.raises(ValueError, match=message):
            kernel.apply(**{**args, **bad})
        assert torch.equal(state.hidden(), before.hidden()) and torch.equal(state.ids,
                                                                            before.ids)
    views = state.views()
    with pytest.raises(ValueError, match="q"):  # a layer's arrays of different shapes
        _compiled.StateArrays(views.ids, views.positions,
                              [views.layers[0], tuple(a[:1] for a in views.layers[1])],
                              views.residual, views.output, views.slots)
    with pytest.raises(ValueError, match="slot arrays"):
        _compiled.StateArrays(views.ids, views.positions, views.layers, views.residual,
                              views.output, [*views.slots, (np.zeros((2, 3)), 0)])
    groups = 2 if tiny.config.codebook_groups == 1 else 1  # another number of codes per token
    other = IncrementalEngine(tiny_vq("bert", codebook_groups=groups), compiled=True).build([5])
    with pytest.raises(ValueError, match="model's shapes"):
        kernel.apply(**{**args, "state": other.views().compiled})


def test_forced_passes_are_compiled_full_passes_only(tiny):
    """Forcing codes is how `verify` builds its reference: on an engine without the compiled
    path, or on a state that already holds tokens, it is refused and nothing changes."""
    ids = list(range(5, 25))
    compiled = IncrementalEngine(tiny, compiled=True)
    state = compiled.build(ids)
    forced = compiled.forced(ids, state.positions, state.codes())
    assert torch.equal(forced.codes(), state.codes()) and torch.equal(forced.hidden(),
                                                                      state.hidden())
    other = (state.codes() + 1) % tiny.config.codebook_size  # never the nearest
    forced = compiled.forced(ids, state.positions, other)
    assert torch.equal(forced.codes(), other) and not torch.equal(forced.hidden(), state.hidden())
    before = state.snapshot()
    with pytest.raises(ValueError, match="empty state"):
        compiled.apply(state, 0, 0, [7], codes=state.codes()[:, :1])
    assert torch.equal(state.hidden(), before.hidden()) and torch.equal(state.ids, before.ids)
    with pytest.raises(ValueError, match="compiled engine"):
        IncrementalEngine(tiny, compiled=False).forced(ids, state.positions, state.codes())
