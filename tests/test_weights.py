"""Weights rounded to a smaller format: the same numbers in torch and in the compiled path."""

import pytest
import torch

from tests.test_incremental import TINY_VOCAB
from tests.vq import tiny_vq
from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.weights import FORMATS, round_weights
from vqedit.lab.verify import verify


@pytest.mark.parametrize("format", ["bfloat16", "int8"])
def test_rounding_is_idempotent_and_close(format):
    model = tiny_vq("bert")
    w = model.blocks[0].mlp.up.weight.detach().clone()
    round_weights(model, format)
    once = model.blocks[0].mlp.up.weight.detach().clone()
    round_weights(model, format)
    assert torch.equal(model.blocks[0].mlp.up.weight, once) and model.weights == format
    assert float(((once - w).abs() / w.abs().amax(1, keepdim=True)).max()) < 1 / 100
    assert not torch.equal(once, w)


@pytest.mark.parametrize("family", ["bert", "opt"])
@pytest.mark.parametrize("format", FORMATS)
def test_edits_in_every_format_equal_a_full_pass_of_the_rounded_model(family, format):
    """The compiled path packs the rounded values exactly (it refuses weights that are not),
    so exact-mode states still equal full passes of the rounded model."""
    model = round_weights(tiny_vq(family), format)
    engine = IncrementalEngine(model, compiled=True)
    state = engine.build(TINY_VOCAB[:40])
    for start, end, new in [(3, 4, [7]), (10, 10, [8, 9]), (20, 23, []), (0, 1, [11])]:
        engine.apply(state, start, end, new)
        assert verify(engine, state).exact()


@pytest.mark.parametrize("compiled", [True, False])
def test_small_formats_keep_queries_keys_and_values_in_bfloat16(compiled):
    """The model rounds them as it computes them, so a state keeps them in bfloat16, a quarter
    of its bytes lighter, and still equals a full pass; a float32 model keeps float32."""
    ids = TINY_VOCAB[:30]
    plain = IncrementalEngine(tiny_vq("opt"), compiled=compiled).build(ids)
    model = round_weights(tiny_vq("opt"), "bfloat16")
    engine = IncrementalEngine(model, compiled=compiled)
    state = engine.build(ids)
    assert plain.layers[0].q.dtype == torch.float32
    assert {layer.k.dtype for layer in state.layers} == {torch.bfloat16}
    c = model.config
    assert plain.slot_nbytes - state.slot_nbytes == 3 * c.n_layers * c.d_model * 2
    x = model.embed(torch.tensor([ids]), torch.arange(len(ids), dtype=torch.float64)[None])
    q, k, v = model.blocks[0].projections(x)  # (1, T, H, Dh), rounded by the model
    for name, full in (("q", q), ("k", k), ("v", v)):
        assert torch.equal(full, full.bfloat16().float())
        kept = getattr(state.layers[0], name)[:, state.order].float()  # (H, T, Dh)
        torch.testing.assert_close(kept, full[0].transpose(0, 1), rtol=1e-2, atol=1e-5)
    engine.apply(state, 5, 7, [9])
    assert verify(engine, state).exact()


def test_unknown_formats_and_unrounded_weights_are_refused():
    model = tiny_vq("bert")
    with pytest.raises(ValueError, match="float16"):
        round_weights(model, "float16")
    model.weights = "int8"  # claims a format its values do not fit
    with pytest.raises(ValueError, match="not rounded"):
        IncrementalEngine(model, compiled=True)
