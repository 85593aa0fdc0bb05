"""The distillation objective's parts: positions, margins, edited copies, and the loss itself."""

import math
import random

import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.tiny import tiny_bert
from tests.vq import tiny_vq
from vqedit.engine.checkpoint import from_hf
from vqedit.engine.positions import MIN_GAP
from vqedit.lab.train.distill import (
    Objective,
    margin_hinge,
    objective_losses,
    replace_one,
    simulated_positions,
    update_codewords,
)


@given(st.integers(2, 512), st.integers(0, 2**32 - 1))
def test_simulated_positions_are_what_the_engine_could_hold(length, seed):
    positions = simulated_positions(length, 512, random.Random(seed))
    assert positions.shape == (length,)
    assert positions[0] >= 0 and positions[-1] <= 511
    assert (positions.diff() >= MIN_GAP - 1e-12).all(), "increasing, never closer than MIN_GAP"


def test_simulated_positions_leave_gaps_and_fractions():
    positions = simulated_positions(128, 512, random.Random(0))
    gaps = positions.diff()
    assert (gaps != 1).any(), "an edit history is not the canonical spacing"


def test_the_margin_hinge_is_zero_only_with_the_margin():
    distances = torch.tensor([[[[1.0, 4.0, 9.0]]]])  # (B, T, H, K) squared distances
    own = torch.tensor([[[0]]])
    assert margin_hinge(distances, own, ratio=2.0).item() == 0, "4 ≥ 2 · 1: safe"
    assert math.isclose(margin_hinge(distances, own, ratio=8.0).item(), math.log(2), rel_tol=1e-5)
    other = torch.tensor([[[1]]])
    assert margin_hinge(distances, other, ratio=1.0).item() > 0, "another codeword is nearer"


def test_replace_one_edits_at_most_one_inner_token_per_row():
    ids = torch.arange(40).view(4, 10)
    edited, at = replace_one(ids, torch.Generator().manual_seed(0))
    changed = edited != ids
    assert (changed.sum(1) <= 1).all() and changed.any()
    assert not changed[:, 0].any() and not changed[:, -1].any(), "special tokens stay"
    assert all(changed[row, i] or edited[row, i] == ids[row, i] for row, i in enumerate(at))


def test_the_objective_trains_weights_and_codewords():
    student, teacher = tiny_vq("bert"), from_hf(tiny_bert())
    ids = torch.randint(3, 1000, (2, 24))
    positions = torch.stack([simulated_positions(24, 64, random.Random(i)) for i in range(2)])
    losses = objective_losses(student, teacher, ids, positions, Objective(), 0.5,
                              torch.Generator().manual_seed(0))
    assert set(losses.parts) == {"hidden", "pooled", "commitment", "margin", "stability", "blend"}
    assert math.isfinite(losses.total.item()) and losses.flips >= 0
    losses.total.backward()
    assert student.blocks[0].attention.q.weight.grad.abs().sum() > 0
    assert teacher.blocks[0].attention.q.weight.grad is None, "the teacher is frozen"


def test_commitment_and_quantization_are_annealed_upward():
    objective = Objective(commitment=(0.25, 2.0), anneal=0.5)
    assert objective.beta(0) == 0.25 and objective.beta(1) == 2.0 and objective.beta(2) == 2.0
    assert (objective.blend(0), objective.blend(0.25), objective.blend(0.5)) == (0, 0.5, 1)


def test_a_blended_pass_lies_between_dense_and_quantized():
    model, ids = tiny_vq("bert"), torch.randint(3, 1000, (1, 12))
    with torch.no_grad():
        dense, hard = model(ids, quantize=False), model(ids)
        assert torch.equal(model(ids, blend=0.0).hidden, dense.hidden)
        assert torch.equal(model(ids, blend=1.0).hidden, hard.hidden), "1 is exactly quantized"


def test_codewords_move_towards_the_activations_they_quantize():
    model = tiny_vq("bert")
    out = model(torch.randint(3, 1000, (2, 30)))
    before = [b.codebook.codewords.detach().clone() for b in model.blocks]
    update_codewords(model, [h.detach() for h in out.heads], list(out.codes), decay=0.0)
    words = model.blocks[0].codebook.codewords
    head, code = out.codes[0][0, 0, 0], out.codes[0][0, 0]
    chosen = out.codes[0][..., 0] == code[0]  # tokens of head 0 holding that code
    mean = out.heads[0][..., 0, :][chosen].mean(0)
    assert torch.allclose(words[0, head], mean, atol=1e-6), "decay 0: the codeword is the mean"
    unused = set(range(16)) - set(out.codes[0][..., 0].flatten().tolist())
    assert all(torch.equal(words[0, k], before[0][0, k]) for k in unused), "unused stay put"
