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


def test_unknown_formats_and_unrounded_weights_are_refused():
    model = tiny_vq("bert")
    with pytest.raises(ValueError, match="float16"):
        round_weights(model, "float16")
    model.weights = "int8"  # claims a format its values do not fit
    with pytest.raises(ValueError, match="not rounded"):
        IncrementalEngine(model, compiled=True)
