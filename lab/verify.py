"""Checking an incremental state against full passes of the same model.

Two full passes at the state's virtual positions, in the arithmetic the engine computes with: its
compiled path where it has one (torch cannot reproduce that path's rounding of each linear's
input rows bit for bit, and one input rounded the other way moves a state by ~1e-2 at the 127
levels served), torch otherwise:
- *forced*: every head takes the state's code. It must reproduce the state's final hidden states,
  and every code must obey the mode's rule for the head outputs of that pass (exact: nearest;
  sticky: within (1 + δ) of the nearest). This checks the engine's mechanics in both modes.
- *fresh*: the plain model, nearest codes everywhere. In exact mode the state must equal it; in
  sticky mode the cosine of the pooled embeddings measures how far hysteresis has drifted.

Where a head output's two nearest codewords are within `NEAR_TIE` of its norm, float32 rounding
alone can pick either: such decisions are not counted as violations (and the codes downstream
of one may then differ from the fresh pass, which is why codes are compared on the forced pass).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.state import SegmentState

NEAR_TIE = 1e-4  # relative to the head output's norm
HIDDEN_TOLERANCE = 1e-4  # max abs difference of final hidden states
COSINE_TOLERANCE = 1e-6  # exact mode: pooled embeddings at cosine ≥ 1 − this


@dataclass(frozen=True)
class Verdict:
    hidden_diff: float  # max |state − forced pass| over final hidden states
    mean_diff: float  # max |state's running sum / T − forced pass's mean final hidden state|
    rule_violations: int  # codes breaking the mode's rule in the forced pass, near ties aside
    not_nearest: int  # codes that are not the nearest in the forced pass, near ties aside
    codes_fresh: float  # share of codes equal to the fresh pass's
    hidden_diff_fresh: float  # max |state − fresh pass| over final hidden states
    cosine: float  # pooled embedding, state vs fresh pass

    def exact(self) -> bool:
        """The state is what a full pass computes (exact mode's invariant).

        Every code is the nearest for the state's own head outputs, near ties aside. If a near
        tie went the other way in the fresh pass, everything downstream of it differs, so the
        fresh pass is only compared when all codes agree.
        """
        if not self.mechanics() or self.not_nearest:
            return False
        return self.codes_fresh < 1 or (self.hidden_diff_fresh <= HIDDEN_TOLERANCE
                                        and self.cosine >= 1 - COSINE_TOLERANCE)

    def mechanics(self) -> bool:
        """The state is what a full pass computes with the state's codes (both modes)."""
        return (self.hidden_diff <= HIDDEN_TOLERANCE and self.mean_diff <= HIDDEN_TOLERANCE
                and self.rule_violations == 0)


@dataclass(frozen=True)
class _Pass:
    heads: list[torch.Tensor]  # per layer (T, H, Dh) head outputs before quantization
    hidden: torch.Tensor  # (T, D) final hidden states
    codes: torch.Tensor  # (L, T, Q)


@torch.no_grad()
def verify(engine: IncrementalEngine, state: SegmentState) -> Verdict:
    model, delta = engine.model, engine.mode.delta
    codes = state.codes()  # (L, T, Q)
    forced, fresh = _full_passes(engine, state, codes)
    hidden = state.hidden()  # (T, D)
    violations = not_nearest = 0
    for block, h, layer_codes in zip(model.blocks, forced.heads, codes, strict=True):
        dist = block.codebook.distances(h).clamp(min=0).sqrt()  # (T, Q, K)
        d_code = dist.gather(-1, layer_codes.unsqueeze(-1)).squeeze(-1)  # (T, Q)
        # A near tie is judged against the norm of the whole head output the group belongs to.
        tie = NEAR_TIE * h.norm(dim=-1).repeat_interleave(block.codebook.groups, dim=-1)
        nearest = dist.amin(-1)  # (T, Q)
        violations += int((d_code > (1 + delta) * nearest + tie).sum())
        not_nearest += int((d_code > nearest + tie).sum())
    pooled = F.cosine_similarity(state.mean(), fresh.hidden.mean(0), dim=0)
    return Verdict(
        hidden_diff=_max_diff(hidden, forced.hidden),
        mean_diff=_max_diff(state.mean(), forced.hidden.mean(0)) if len(state) else 0.0,
        rule_violations=violations,
        not_nearest=not_nearest,
        codes_fresh=float((codes == fresh.codes).float().mean()) if len(state) else 1.0,
        hidden_diff_fresh=_max_diff(hidden, fresh.hidden),
        cosine=float(pooled) if len(state) else 1.0,
    )


def _full_passes(engine: IncrementalEngine, state: SegmentState,
                 codes: torch.Tensor) -> tuple[_Pass, _Pass]:
    """The forced and the fresh pass over the state's tokens at its positions."""
    if engine.compiled:
        ids, positions = state.ids.tolist(), state.positions
        return (_of_state(engine.forced(ids, positions, codes)),
                _of_state(engine.build(ids, positions)))
    ids, positions = state.ids.unsqueeze(0), state.positions.unsqueeze(0)  # (1, T)
    passes = (engine.model(ids, positions, codes=codes.unsqueeze(1)),
              engine.model(ids, positions))
    return tuple(_Pass([h[0] for h in p.heads], p.hidden[0], p.codes[:, 0]) for p in passes)


def _of_state(state: SegmentState) -> _Pass:
    heads = [layer.heads[:, state.order].transpose(0, 1) for layer in state.layers]  # (T, H, Dh)
    return _Pass(heads, state.hidden(), state.codes())


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0
