"""The compiled path: one call per edit instead of ~1,300 small torch operations.

`engine/compiled.cpp` implements, for every layer of an edit, what `IncrementalEngine._layer` and
`Block.finish` do in torch; a full pass is an edit that inserts every token, so it runs here too
(2-2.6x faster than in torch). The torch code stays the readable reference that tests compare
it to (`tests/test_compiled.py`), and the GPU's path. This module packs a model's weights for it
and passes a state's arrays to it as numpy views (no copies).
"""

import numpy as np
import torch

from . import _compiled
from .mode import Mode
from .model import VQTransformer
from .state import SegmentState


def available(model: VQTransformer) -> bool:
    """Whether this model's edits can run compiled: CPU weights and byte codes."""
    return (model.config.codebook_size <= 256
            and next(model.parameters()).device.type == "cpu")


class CompiledLayers:
    """A model's layers, packed for the compiled edit path under one mode's hysteresis δ."""

    def __init__(self, model: VQTransformer, delta: float) -> None:
        if not available(model):
            raise ValueError("the compiled edit path needs a model on the CPU and at most 256 "
                             "codewords per group")
        c = model.config
        levels = {linear.input_levels for block in model.blocks
                  for linear in block.linears().values()}
        if len(levels) != 1:
            raise ValueError(f"the linears' inputs are rounded differently: {sorted(levels)}")
        self.kernel = _compiled.CompiledModel(
            d_model=c.d_model, n_heads=c.n_heads, d_ff=c.d_ff, groups=c.codebook_groups,
            codebook_size=c.codebook_size, causal=c.causal, pre_norm=c.pre_norm,
            gelu=c.activation == "gelu", eps=c.layer_norm_eps, delta=delta,
            weights=model.weights, input_levels=levels.pop())
        with torch.no_grad():
            embedding = {"token": model.token_embedding.weight.numpy(),
                         "position": model.position_embedding.weight.numpy()}
            if model.type_embedding is not None:
                embedding["type"] = _array(model.type_embedding)
            for name, norm in (("norm", model.embed_norm), ("final_norm", model.final_norm)):
                if isinstance(norm, torch.nn.LayerNorm):
                    embedding[f"{name}.weight"] = _array(norm.weight)
                    embedding[f"{name}.bias"] = _array(norm.bias)
            self.kernel.set_embedding(embedding, c.position_offset)
            for block in model.blocks:
                weights = {f"{name}.{p}": _array(getattr(linear, p))
                           for name, linear in block.linears().items() for p in ("weight", "bias")}
                for name in ("attn_norm", "mlp_norm"):
                    norm = getattr(block, name)
                    weights[f"{name}.weight"] = _array(norm.weight)
                    weights[f"{name}.bias"] = _array(norm.bias)
                weights["codewords"] = _array(block.codebook.codewords)
                self.kernel.add_layer(weights)

    def apply(self, state: SegmentState, start: int, end: int, new_ids: list[int],
              new_positions: torch.Tensor, moved: list[int], codes: torch.Tensor | None,
              mode: Mode) -> tuple[list[int], list[int], dict] | None:
        """An edit of `state` in place, as `IncrementalEngine.apply` makes it: tokens
        [start, end) become `new_ids`, the segment's positions `new_positions` (T',) of which
        the kept tokens at indices `moved` changed; `codes` (L, len(new_ids), Q) forces the new
        tokens' codes (a forced full pass). The state must have room for the new tokens
        (`SegmentState.reserve`). Returns |D| per layer, the flips outside D per layer and the
        counts (MACs, refreshes, sweep flips); or None, with only the tokens and positions
        changed, where half the rows or more are dirty from the start (a full pass is cheaper).
        """
        order, dirty, flipped, counts = self.kernel.apply(
            state.views().compiled, state.order.numpy(), start, end,
            np.asarray(new_ids, dtype=np.int64), new_positions.numpy(),
            np.asarray(moved, dtype=np.int64),
            None if codes is None else codes.to(torch.uint8).numpy(), state.total.numpy(),
            state.sweep, mode.sweep, mode.max_updates)
        state.order = torch.from_numpy(order)
        return None if dirty is None else (dirty, flipped, counts)


def _array(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().numpy())
