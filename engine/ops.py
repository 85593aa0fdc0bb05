"""Counting multiply-accumulates, so "N times fewer operations" is measured, not estimated.

One `MacCounter` belongs to a model; every module of that model that multiplies matrices adds to
it, whether it runs in a full forward pass or in an incremental update. Element-wise work (norms,
softmax, activations, embedding look-ups) is not counted: it is O(T·D), negligible beside the
O(T·D²) products, and the same for every path.
"""

import torch
from torch import nn


class MacCounter:
    """A running total of multiply-accumulates. Not thread-safe: one counter per worker."""

    def __init__(self) -> None:
        self.macs = 0

    def add(self, macs: int) -> None:
        self.macs += int(macs)

    def reset(self) -> int:
        """Return the total so far and start again from zero."""
        total, self.macs = self.macs, 0
        return total


def on_grid(x: torch.Tensor, levels: int) -> torch.Tensor:
    """x (..., I) with each row rounded to the integer multiples of its own step max|x| / levels.

    The compiled path multiplies such rows as integers (engine/compiled.cpp); this is the same
    rounding in torch: the division, round half to even and product as it does them.
    """
    step = (x.abs().amax(-1, keepdim=True) / levels).clamp(min=torch.finfo(x.dtype).tiny)
    return torch.round(x / step) * step


class CountedLinear(nn.Linear):
    """`nn.Linear` that adds rows · in · out MACs to its counter on every call.

    With `input_levels` set (a weight format that says so, engine/weights.py), each input row is
    first rounded to that many levels either side of zero (`on_grid`).
    """

    def __init__(self, d_in: int, d_out: int, counter: MacCounter, bias: bool = True) -> None:
        super().__init__(d_in, d_out, bias=bias)
        self.counter = counter
        # The (out, in) weight is stored column-major: x @ W.T then reads W.T contiguously, which
        # MKL multiplies ~10% faster for the few rows of an edit. Shape and values are unchanged.
        self.weight = nn.Parameter(self.weight.detach().t().contiguous().t())
        self.input_levels = 0  # 0: inputs as they come

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.counter.add(x.shape[:-1].numel() * self.in_features * self.out_features)
        if self.input_levels:
            x = on_grid(x, self.input_levels)
        return super().forward(x)
