"""The compiled edit path: one call per layer instead of ~200 small torch operations.

`engine/compiled.cpp` implements, for one layer of an edit, what `IncrementalEngine._layer` and
`Block.finish` do in torch; the torch code stays the readable reference that tests compare it to
(`tests/test_compiled.py`), and the path for full passes and the GPU. This module packs a model's
weights for it and passes a state's arrays to it as numpy views (no copies).
"""

import numpy as np
import torch

from .model import VQTransformer
from .state import LayerState

from . import _compiled


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
        self.kernel = _compiled.CompiledModel(
            d_model=c.d_model, n_heads=c.n_heads, d_ff=c.d_ff, groups=c.codebook_groups,
            codebook_size=c.codebook_size, causal=c.causal, pre_norm=c.pre_norm,
            gelu=c.activation == "gelu", eps=c.layer_norm_eps, delta=delta)
        with torch.no_grad():
            for block in model.blocks:
                a, mlp = block.attention, block.mlp
                linears = {"q": a.q, "k": a.k, "v": a.v, "o": a.o, "up": mlp.up,
                           "down": mlp.down}
                weights = {f"{name}.{p}": _array(getattr(linear, p))
                           for name, linear in linears.items() for p in ("weight", "bias")}
                for name in ("attn_norm", "mlp_norm"):
                    norm = getattr(block, name)
                    weights[f"{name}.weight"] = _array(norm.weight)
                    weights[f"{name}.bias"] = _array(norm.bias)
                weights["codewords"] = _array(block.codebook.codewords)
                self.kernel.add_layer(weights)

    def edit(self, layer: int, st: LayerState, size: int, inputs: torch.Tensor,
             out: torch.Tensor, rows: np.ndarray, kept: np.ndarray,
             gone: tuple[torch.Tensor, torch.Tensor], gone_order: np.ndarray, rank: np.ndarray,
             limit: np.ndarray, turn: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """One layer of an edit on `st` in place; the output rows go to `out` (S, D).

        rows (|D|,) sorted dirty slots whose new input is in `inputs` (S, D); kept (|D|,)
        whether each held the same token before. Returns the slots outside D whose code flipped,
        the rows written to `out` (sorted) and the counts (MACs, refreshes, sweep flips).
        """
        return self.kernel.edit(
            layer, size, st.q.numpy(), st.k.numpy(), st.v.numpy(), st.m.numpy(), st.s.numpy(),
            st.heads.numpy(), st.codes.numpy(), st.slack.numpy(), st.updates.numpy(),
            inputs.numpy(), out.numpy(), rows, kept, gone[0].numpy(), gone[1].numpy(),
            gone_order, rank, limit, turn)


def _array(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().numpy())
