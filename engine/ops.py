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


class CountedLinear(nn.Linear):
    """`nn.Linear` that adds rows · in · out MACs to its counter on every call."""

    def __init__(self, d_in: int, d_out: int, counter: MacCounter, bias: bool = True) -> None:
        super().__init__(d_in, d_out, bias=bias)
        self.counter = counter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.counter.add(x.shape[:-1].numel() * self.in_features * self.out_features)
        return super().forward(x)
