"""The VQ-transformer: one definition for BERT-style encoders and OPT decoders.

Read bottom-up: config → virtual positions → codebook → attention → MLP → block → model.
A transformer block is token-wise except attention, so each attention head's output (per token,
before the output projection) is replaced by its nearest codeword: a token's next-layer state
then changes only if its own state changed or one of its head codes flipped (docs/design.md).

Shapes: B batch, T tokens, D model width, H heads, Dh head width (D = H·Dh), F MLP width,
G code groups per head, Q = H·G codes per token, Dg = Dh / G group width, K codewords per
group, L layers, V vocabulary, P rows of the position table.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .ops import CountedLinear, MacCounter

Family = Literal["bert", "opt"]


@dataclass(frozen=True)
class VQConfig:
    family: Family  # "bert": bidirectional, post-LayerNorm; "opt": causal, pre-LayerNorm
    vocab_size: int
    max_positions: int  # the window: how many positions the learned table addresses
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    activation: Literal["gelu", "relu"]  # BERT uses the exact (erf) GELU, OPT uses ReLU
    layer_norm_eps: float
    position_offset: int = 0  # OPT keeps two unused rows before position 0 (a fairseq legacy)
    codebook_size: int = 64  # codewords per group; small enough to fit k-means on one document
    codebook_groups: int = 1  # each head output is quantized as this many equal slices

    def __post_init__(self) -> None:
        if self.family not in ("bert", "opt"):
            raise ValueError(f"family must be 'bert' or 'opt', got {self.family!r}")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {self.activation!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.codebook_groups < 1 or self.head_dim % self.codebook_groups:
            raise ValueError(f"codebook_groups must divide the head width {self.head_dim}, "
                             f"got {self.codebook_groups}")

    @property
    def causal(self) -> bool:
        return self.family == "opt"

    @property
    def pre_norm(self) -> bool:
        return self.family == "opt"

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_codes(self) -> int:
        """Codes per token and layer: one per group of every head."""
        return self.n_heads * self.codebook_groups


def full_pass_macs(config: VQConfig, tokens: int, quantized: bool = False) -> int:
    """What the counter adds for one full forward pass over `tokens` tokens, without running it.

    Per layer: q/k/v/output projections, the MLP, scores and weighted values over every
    attended pair, and with codebooks each head output's distance to every codeword.
    `tests/test_model.py` checks it against the counter.
    """
    d, f, t = config.d_model, config.d_ff, tokens
    pairs = t * (t + 1) // 2 if config.causal else t * t
    per_layer = 4 * t * d * d + 2 * t * d * f + 2 * pairs * d
    if quantized:
        per_layer += t * config.codebook_size * d
    return config.n_layers * per_layer


class PositionTable(nn.Module):
    """Learned absolute positions, read at virtual (real-valued) positions.

    A position between two integers interpolates linearly between their rows, so inserted tokens
    can take positions between their neighbours without shifting anyone; integer positions read
    the rows exactly, which gives the canonical model.
    """

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.offset = config.position_offset
        self.max_positions = config.max_positions
        self.weight = nn.Parameter(torch.zeros(config.max_positions + config.position_offset,
                                               config.d_model))  # (P, D)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        if positions.numel() and (positions.min() < 0 or positions.max() > self.max_positions - 1):
            raise ValueError(
                f"positions must lie in [0, {self.max_positions - 1}], got "
                f"[{positions.min().item()}, {positions.max().item()}]")
        below = positions.floor()  # (B, T)
        row = below.long() + self.offset  # (B, T)
        above = (row + 1).clamp(max=self.weight.shape[0] - 1)  # (B, T)
        frac = (positions - below).to(self.weight.dtype).unsqueeze(-1)  # (B, T, 1)
        return torch.lerp(self.weight[row], self.weight[above], frac)  # (B, T, D)


@dataclass
class Quantized:
    values: torch.Tensor  # (B, T, H, Dh) codewords in the forward pass, identity gradient to x
    codes: torch.Tensor  # (B, T, Q) index of each group's codeword


class Codebook(nn.Module):
    """Product quantization of the head outputs: each head output is cut into G slices of
    width Dg and every slice is replaced by the nearest codeword of its own codebook.

    With G = 1 this is one codebook per head. More groups keep more of each head output
    (K^G combinations per head instead of K) at the same cost of distances, Q·K·Dg = H·K·Dh.
    """

    def __init__(self, config: VQConfig, counter: MacCounter) -> None:
        super().__init__()
        self.counter = counter
        self.groups = config.codebook_groups
        shape = (config.n_codes, config.codebook_size, config.head_dim // self.groups)
        self.codewords = nn.Parameter(torch.zeros(shape))  # (Q, K, Dg)
        # False until fitted (k-means or a checkpoint): quantizing onto zeros is silent garbage.
        self.register_buffer("fitted", torch.tensor(False))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Squared distance of every group of the head outputs x (..., H, Dh) to every codeword
        of its codebook. (..., Q, K)"""
        n_codes, size, width = self.codewords.shape
        by_group = x.reshape(-1, n_codes, width).transpose(0, 1)  # (Q, N, Dg)
        distances = self._distances(by_group, self.squared_norms())  # (Q, N, K)
        return distances.transpose(0, 1).reshape(*x.shape[:-2], n_codes, size)

    def head_distances(self, x: torch.Tensor, square: torch.Tensor) -> torch.Tensor:
        """Squared distances of head-major outputs x (H, N, Dh) to their codewords. (Q, N, K)

        `square` is `squared_norms()`, which a caller deciding a few rows at a time keeps.
        """
        if self.groups > 1:
            n_heads, n, head_dim = x.shape
            x = x.view(n_heads, n, self.groups, head_dim // self.groups).transpose(1, 2)
            x = x.reshape(n_heads * self.groups, n, head_dim // self.groups)  # (Q, N, Dg)
        return self._distances(x, square)

    def squared_norms(self) -> torch.Tensor:
        """|c|² of every codeword. (Q, 1, K)"""
        return self.codewords.pow(2).sum(-1).unsqueeze(1)

    def _distances(self, x: torch.Tensor, square: torch.Tensor) -> torch.Tensor:
        """x (Q, N, Dg), square the codewords' |c|² (Q, 1, K) → (Q, N, K)"""
        _, size, width = self.codewords.shape
        self.counter.add(x.shape[1] * x.shape[0] * size * width)
        cross = torch.baddbmm(square, x, self.codewords.transpose(1, 2), alpha=-2)  # (Q, N, K)
        return cross + x.pow(2).sum(-1, keepdim=True)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """The codewords of codes (..., Q), as head outputs (..., H, Dh)."""
        n_codes, _, width = self.codewords.shape
        groups = torch.arange(n_codes, device=codes.device)  # (Q,)
        words = self.codewords[groups, codes]  # (..., Q, Dg)
        return words.reshape(*codes.shape[:-1], n_codes // self.groups, self.groups * width)

    def forward(self, x: torch.Tensor, blend: float = 1.0) -> Quantized:
        """`blend` < 1 (training only) moves each head output only that far towards its codeword."""
        if not self.fitted:
            raise RuntimeError("this codebook was never fitted: run k-means or load a checkpoint")
        codes = self.distances(x).argmin(-1)  # (B, T, Q)
        q = self.lookup(codes)  # (B, T, H, Dh)
        if blend != 1.0:
            q = torch.lerp(x, q, blend)
        # Straight-through: the value is exactly q (x - x is exactly 0), the gradient reaches x.
        return Quantized(q.detach() + (x - x.detach()), codes)


class Attention(nn.Module):
    """Multi-head self-attention, split at the head outputs where the codebook sits."""

    def __init__(self, config: VQConfig, counter: MacCounter) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.causal = config.causal
        self.counter = counter
        self.q = CountedLinear(d, d, counter)
        self.k = CountedLinear(d, d, counter)
        self.v = CountedLinear(d, d, counter)
        self.o = CountedLinear(d, d, counter)
        # Queries, keys and values are rounded to this type (a weight format sets it,
        # engine/weights.py): an incremental state keeps them for every token, in this type.
        self.qkv_dtype = torch.float32

    def project(self, linear: CountedLinear, x: torch.Tensor) -> torch.Tensor:
        """Queries, keys or values of x (B, T, D), rounded to `qkv_dtype`. (B, T, H, Dh)"""
        y = linear(x).view(*x.shape[:-1], self.n_heads, self.head_dim)
        return y if self.qkv_dtype == torch.float32 else y.to(self.qkv_dtype).float()

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.project(self.q, x), self.project(self.k, x), self.project(self.v, x)

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax attention of every query over the keys it may see; returns head outputs."""
        batch, t, n_heads, head_dim = q.shape
        pairs = t * (t + 1) // 2 if self.causal else t * t  # query-key pairs actually needed
        self.counter.add(2 * batch * n_heads * pairs * head_dim)  # scores, then weighted values
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)  # (B, H, T, T)
        if self.causal:
            future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)  # (T, T)
            scores = scores.masked_fill(future, float("-inf"))
        return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)  # (B, T, H, Dh)


class MLP(nn.Module):
    def __init__(self, config: VQConfig, counter: MacCounter) -> None:
        super().__init__()
        self.up = CountedLinear(config.d_model, config.d_ff, counter)
        self.down = CountedLinear(config.d_ff, config.d_model, counter)
        self.activation = F.gelu if config.activation == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.up(x)))  # (B, T, F) → (B, T, D)


@dataclass
class BlockOutput:
    x: torch.Tensor  # (B, T, D) the block's output, the next block's input
    heads: torch.Tensor  # (B, T, H, Dh) head outputs before quantization
    codes: torch.Tensor | None  # (B, T, Q) when quantized


class Block(nn.Module):
    """A transformer layer: post-LayerNorm (BERT) or pre-LayerNorm (OPT)."""

    def __init__(self, config: VQConfig, counter: MacCounter) -> None:
        super().__init__()
        self.pre_norm = config.pre_norm
        self.attn_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attention = Attention(config, counter)
        self.codebook = Codebook(config, counter)
        self.mlp_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.mlp = MLP(config, counter)

    def linears(self) -> dict[str, CountedLinear]:
        """The block's weight matrices by name: what a weight format rounds and kernels pack."""
        a = self.attention
        return {"q": a.q, "k": a.k, "v": a.v, "o": a.o, "up": self.mlp.up, "down": self.mlp.down}

    def projections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values, each (B, T, H, Dh), after the pre-norm where there is one."""
        return self.attention.qkv(self.attn_norm(x) if self.pre_norm else x)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """Queries (B, T, H, Dh) alone, after the pre-norm where there is one."""
        return self.attention.project(self.attention.q, self.attn_norm(x) if self.pre_norm else x)

    def head_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Everything up to the codebook: (pre-)norm, projections, attention."""
        return self.attention.mix(*self.projections(x))  # (B, T, H, Dh)

    def finish(self, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """Everything after the codebook; token-wise, so only dirty tokens need it."""
        a = self.attention.o(heads.flatten(-2))  # (B, T, D)
        if self.pre_norm:
            x = x + a
            return x + self.mlp(self.mlp_norm(x))
        x = self.attn_norm(x + a)
        return self.mlp_norm(x + self.mlp(x))

    def forward(self, x: torch.Tensor, quantize: bool, codes: torch.Tensor | None = None,
                blend: float = 1.0) -> BlockOutput:
        """`codes` (B, T, Q), when given, replace the nearest codewords (to check a state)."""
        heads = self.head_outputs(x)
        if codes is not None:
            return BlockOutput(self.finish(x, self.codebook.lookup(codes)), heads, codes)
        if not quantize:
            return BlockOutput(self.finish(x, heads), heads, None)
        q = self.codebook(heads, blend)
        return BlockOutput(self.finish(x, q.values), heads, q.codes)


@dataclass
class ModelOutput:
    hidden: torch.Tensor  # (B, T, D) final hidden states
    codes: torch.Tensor | None  # (L, B, T, Q) codes when quantized
    heads: list[torch.Tensor]  # L × (B, T, H, Dh) head outputs before quantization


class VQTransformer(nn.Module):
    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        self.counter = MacCounter()
        self.weights = "float32"  # the format the linears' weights fit (engine/weights.py)
        d = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.position_embedding = PositionTable(config)
        # BERT adds the segment-type-0 row to every token; OPT has none.
        self.type_embedding = nn.Parameter(torch.zeros(d)) if config.family == "bert" else None
        self.embed_norm = (nn.LayerNorm(d, eps=config.layer_norm_eps)
                           if config.family == "bert" else nn.Identity())
        self.blocks = nn.ModuleList(Block(config, self.counter) for _ in range(config.n_layers))
        self.final_norm = (nn.LayerNorm(d, eps=config.layer_norm_eps)
                           if config.pre_norm else nn.Identity())

    @property
    def quantizable(self) -> bool:
        """True once every layer's codebook has been fitted."""
        return all(bool(block.codebook.fitted) for block in self.blocks)

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids)  # (B, T, D)
        if self.type_embedding is not None:
            x = x + self.type_embedding
        return self.embed_norm(x + self.position_embedding(positions))  # (B, T, D)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor | None = None,
                quantize: bool = True, codes: torch.Tensor | None = None,
                blend: float = 1.0) -> ModelOutput:
        """ids (B, T); positions (B, T) real-valued, default 0..T-1 (the canonical model).

        `codes` (L, B, T, Q) forces every group's codeword instead of the nearest one: a full
        pass that must reproduce an incremental state holding those codes. `blend` < 1 is for
        training: distillation anneals from dense (0) to quantized (1) head outputs.
        """
        if positions is None:
            positions = torch.arange(ids.shape[-1], dtype=torch.float64,
                                     device=ids.device).expand(ids.shape)
        x = self.embed(ids, positions)
        forced, found, heads = codes, [], []
        for layer, block in enumerate(self.blocks):
            out = block(x, quantize, None if forced is None else forced[layer], blend)
            x = out.x
            heads.append(out.heads)
            found.append(out.codes)
        hidden = self.final_norm(x)  # (B, T, D)
        quantized = quantize or forced is not None
        return ModelOutput(hidden, torch.stack(found) if quantized else None, heads)
