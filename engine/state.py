"""The incremental state of one segment: what an edit needs so that only changed tokens are redone.

Per layer it holds each token's query, key and value, the running softmax statistics of each
query (a reference max m, the normaliser s = Σ exp(score − m), and the head output, the mean of
the values weighted by exp(score − m) / s), each head's code, and how far each head output may
still move before its code could change. It also holds every layer's input: the embeddings
for the first, then the residual stream (layer l's output is layer l + 1's input, stored once).

Rows live in *slots*, not in text order: attention does not care about order (the causal mask
and the positions carry it), so an edit writes new tokens into free slots and fills the slots of
deleted tokens with the last rows, instead of shifting every later row. `order` maps text order
to slots; arrays keep spare rows so that inserts rarely reallocate.

It also keeps every token's final hidden state (the last layer's output), 1.5 KiB per token:
results need only their sum, but an edit must take the old outputs of the tokens it changes out
of that sum, and recomputing them cost a second pass of the last layer's MLP. The first layer's
input, 1.5 KiB, is kept because an edit reads it several times and embedding it again costs more
than the look-up.

Queries, keys and values are kept in the type the model rounds them to (`Attention.qkv_dtype`):
bfloat16 in the formats vqedit serves, which saves MiniLM 13.5 KiB per token (36 KiB instead of
50) and halves what the running update reads of every row; float32 in a float32 model. They
must be rounded in the model, not only here: float16 queries stored for a float32 model left head
outputs ~1e-3 of their norm off a full pass, and the near-tie decisions that error forced to be
retaken (see `TIE` in incremental.py) cost 40 recomputed rows per edit. Everything else is
float32.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch

from . import _compiled


@dataclass
class LayerState:
    """One layer's arrays. Attention arrays are head-major, so that every head's products are one
    batched matrix product without copies; the rest are slot-major. `SLOT_DIM` says which."""

    q: torch.Tensor  # (H, S, Dh) queries, in the model's `qkv_dtype`; S slots, T in use
    k: torch.Tensor  # (H, S, Dh) keys, the same type
    v: torch.Tensor  # (H, S, Dh) values, the same type
    m: torch.Tensor  # (H, S) float32 reference max of each query's scores
    s: torch.Tensor  # (H, S) float32 normaliser Σ_j exp(score_j − m)
    heads: torch.Tensor  # (H, S, Dh) float32 head outputs Σ_j exp(score_j − m)·v_j / s
    codes: torch.Tensor  # (S, Q) uint8 (int16 past 256 codewords) the code of each group
    slack: torch.Tensor  # (Q, S) float32 distance each group may move keeping its code
    updates: torch.Tensor  # (S,) uint8 running updates since the row was computed in full

    SLOT_DIM: ClassVar[dict[str, int]] = {"q": 1, "k": 1, "v": 1, "m": 1, "s": 1, "heads": 1,
                                          "slack": 1}

    @classmethod
    def empty(cls, n_heads: int, head_dim: int, n_codes: int, codebook_size: int,
              qkv_dtype: torch.dtype) -> "LayerState":
        per_head = (n_heads, 0, head_dim)
        code_type = torch.uint8 if codebook_size <= 256 else torch.int16
        return cls(q=torch.zeros(per_head, dtype=qkv_dtype),
                   k=torch.zeros(per_head, dtype=qkv_dtype),
                   v=torch.zeros(per_head, dtype=qkv_dtype), m=torch.zeros(n_heads, 0),
                   s=torch.zeros(n_heads, 0),
                   heads=torch.zeros(per_head), codes=torch.zeros(0, n_codes, dtype=code_type),
                   slack=torch.zeros(n_codes, 0), updates=torch.zeros(0, dtype=torch.uint8))

    def fields(self) -> Iterator[tuple[object, str, int]]:
        return ((self, f.name, self.SLOT_DIM.get(f.name, 0)) for f in fields(self))

    def rows(self, slots: torch.Tensor) -> "LayerState":
        """A copy holding only the given slots, in that order."""
        return LayerState(*(getattr(self, name).index_select(dim, slots)
                            for _, name, dim in self.fields()))

    def copy(self) -> "LayerState":
        return LayerState(*(getattr(self, f.name).clone() for f in fields(self)))


@dataclass
class SegmentState:
    slot_ids: torch.Tensor  # (S,) int64 token id per slot, special tokens included
    slot_positions: torch.Tensor  # (S,) float64 virtual position per slot
    order: torch.Tensor  # (T,) int64 the slot of each token, in text order
    layers: list[LayerState]  # L
    residual: list[torch.Tensor]  # L × (S, D) float32: layer l's input (the embeddings for l = 0)
    output: torch.Tensor  # (S, D) float32 final hidden state of each slot
    # (D,) float64 sum of `output` over the tokens in use, kept running: results read it at
    # every keystroke, and summing every row of every segment each time costs more.
    total: torch.Tensor
    sweep: int = 0  # sticky mode: the next token (text order) the refresh policy re-quantizes
    # numpy views of the arrays (CPU), made once per allocation (`views`)
    _views: "StateViews | None" = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return self.order.shape[0]

    @property
    def ids(self) -> torch.Tensor:
        return self.slot_ids[self.order]  # (T,)

    @property
    def positions(self) -> torch.Tensor:
        return self.slot_positions[self.order]  # (T,)

    def codes(self) -> torch.Tensor:
        return torch.stack([layer.codes[self.order].long() for layer in self.layers])  # (L,T,Q)

    def hidden(self) -> torch.Tensor:
        return self.output[self.order]  # (T, D) final hidden states

    def mean(self) -> torch.Tensor:
        """Mean final hidden state over the segment's tokens. (D,) float32"""
        return (self.total / max(len(self), 1)).float()

    def slot_fields(self) -> Iterator[tuple[object, str | int, int]]:
        """(owner, attribute or list index, slot dimension) of every per-slot array."""
        yield self, "slot_ids", 0
        yield self, "slot_positions", 0
        for i in range(len(self.residual)):
            yield self.residual, i, 0
        yield self, "output", 0
        for layer in self.layers:
            yield from layer.fields()

    def slot_arrays(self) -> Iterator[tuple[torch.Tensor, int]]:
        for owner, name, dim in self.slot_fields():
            yield (owner[name] if isinstance(owner, list) else getattr(owner, name)), dim

    def views(self) -> "StateViews":
        """numpy views of a CPU state's arrays, kept until the arrays are reallocated: an edit
        hands some sixty arrays to compiled code or moves their rows, and making the views
        anew (and checking them) each time cost ~0.1 ms per edit."""
        if self._views is None:
            layer_names = [f.name for f in fields(LayerState)]
            ids, positions = self.slot_ids.numpy(), self.slot_positions.numpy()
            layers = [tuple(_numpy(getattr(layer, name)) for name in layer_names)
                      for layer in self.layers]
            residual, output = [r.numpy() for r in self.residual], self.output.numpy()
            slots = [(_numpy(t), dim) for t, dim in self.slot_arrays()]
            compiled = (_compiled.StateArrays(ids, positions, layers, residual, output, slots)
                        if self.layers[0].codes.dtype == torch.uint8 else None)
            self._views = StateViews(ids, positions, layers, residual, output, slots, compiled)
        return self._views

    @cached_property
    def slot_nbytes(self) -> int:
        """Bytes of one slot over every per-slot array: fixed by the model's shapes, so counted
        once (the daemon asks after every pass; walking every array took 1.3 ms at 31 segments)."""
        return sum(t.element_size() * math.prod(n for d, n in enumerate(t.shape) if d != dim)
                   for t, dim in self.slot_arrays())

    def nbytes(self, allocated: bool = False) -> int:
        """Bytes of state: of the slots in use, or of all allocated ones."""
        rows = self.slot_ids.shape[0] if allocated else len(self)
        return rows * self.slot_nbytes + self.order.numel() * 8 + self.total.numel() * 8

    def reserve(self, slots: int) -> None:
        """Make room for at least `slots` rows, growing by a quarter to spare reallocations."""
        have = self.slot_ids.shape[0]
        if slots <= have:
            return
        size = max(slots, have + have // 4, 8)
        for owner, name, dim in list(self.slot_fields()):
            t = owner[name] if isinstance(owner, list) else getattr(owner, name)
            shape = list(t.shape)
            shape[dim] = size - have
            grown = torch.cat([t, t.new_zeros(shape)], dim=dim)
            if isinstance(owner, list):
                owner[name] = grown
            else:
                setattr(owner, name, grown)
        self._views = None

    def move_rows(self, to: torch.Tensor, source: torch.Tensor) -> None:
        """Copy every per-slot array's rows `source` into rows `to`.

        On the CPU in compiled code, one call for the some sixty arrays a deletion moves: numpy
        took ~0.25 ms per deletion, torch five times that."""
        if to.device.type != "cpu":
            for t, dim in self.slot_arrays():
                t.index_copy_(dim, to, t.index_select(dim, source))
            return
        _compiled.move_slots(self.views().slots, to.numpy(), source.numpy())

    def become(self, other: "SegmentState") -> None:
        """Take `other`'s arrays in place of this state's (a rebuild of the same segment)."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))

    def snapshot(self) -> "SegmentState":
        """An independent copy: editing either leaves the other as it was (restore = use it)."""
        return SegmentState(self.slot_ids.clone(), self.slot_positions.clone(),
                            self.order.clone(), [layer.copy() for layer in self.layers],
                            [r.clone() for r in self.residual], self.output.clone(),
                            self.total.clone(), self.sweep)


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy view of t; bfloat16 as int16, its bits (numpy has no bfloat16)."""
    return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy()


@dataclass(frozen=True)
class StateViews:
    """numpy views of a segment state's arrays, sharing their memory."""

    ids: np.ndarray  # (S,) int64 token id per slot
    positions: np.ndarray  # (S,) float64 virtual position per slot
    layers: list[tuple[np.ndarray, ...]]  # per layer, LayerState's arrays in field order
    residual: list[np.ndarray]  # L × (S, D)
    output: np.ndarray  # (S, D) final hidden states
    slots: list[tuple[np.ndarray, int]]  # every per-slot array with its slot dimension
    # all of them, checked once, for compiled edits (None where codes are not bytes)
    compiled: _compiled.StateArrays | None
