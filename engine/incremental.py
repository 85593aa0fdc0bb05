"""Incremental inference: apply a token edit to a segment's state, recomputing only what changed.

An edit is applied layer by layer with a dirty set D: the tokens whose layer input changed (at
layer 0: inserted tokens and tokens whose virtual position moved).
1. Norms, queries, keys and values are recomputed for D only.
2. Every other query updates its running softmax statistics: it loses the old contributions of
   the keys in D (and of deleted tokens) and gains the new ones. Causal models touch only queries
   at or after the first changed key.
3. Queries in D get their whole attention row recomputed, as do rows due for a refresh.
4. Head outputs are re-quantized where they may have changed code: rows in D always, other rows
   only once they have moved further than their stored slack allows. A row whose code flips
   joins D for the next layer.
5. Output projection, residual and MLP run for D ∪ flipped only.

Two modes (docs/design.md): *exact* keeps every code the nearest codeword, so the state equals a
full pass; *sticky* keeps a code while it is within (1 + δ) of the nearest codeword's distance,
which stops most flips at a bounded deviation. In sticky mode the refresh policy re-quantizes
`Mode.sweep` tokens per layer per edit exactly, in turn, and compaction (idle time) rebuilds the
state exactly at canonical positions.

Running sums drift in float32: a row is recomputed in full after at most `Mode.max_updates` updates
(fewer for some rows, so that rows built together are refreshed at different edits), when
an update removes most of its softmax mass (cancellation), and before a quantization decision
whose margin is a near tie. `Totals` counts each kind of refresh.

A full pass is the same procedure applied to an empty state with every token inserted, so both
paths share one implementation and one operation counter.
"""

import math
import time
from dataclasses import dataclass, field

import torch

from .compiled import CompiledLayers, available
from .mode import EXACT, Mode
from .model import Block, VQTransformer
from .positions import canonical, place
from .state import LayerState, SegmentState

# A code decision is a near tie when the head output could move less than TIE × its norm before
# the decision changes. Running updates leave a head output within ~1e-6 of a full pass, so such
# decisions are taken again on the row recomputed in full, 1000x clear of that drift; tests accept
# either code where a full pass itself is within 1e-4 of a tie. (With float16 queries the drift
# was ~1e-3 and TIE 1e-2: 40 rows per edit recomputed instead of 8 on the shipped student.)
TIE = 1e-3
# A running update loses bits to cancellation when it removes much of a row's softmax mass and
# adds little back: its float32 rounding error grows by (s_kept + removed + added) / s_new, the
# mass of its terms over the mass left. When the mass it removes exceeds CANCELLATION times
# the new normaliser, that factor passes 9, and the row is recomputed in full instead. (A pure
# deletion of a share c reaches it at c = 0.8.) A row whose best key was replaced by a near copy
# (the kept tokens of D) removes most of its mass and adds it back: the sum is sound. Counting
# the removed mass against the old normaliser instead refreshed 35 rows per edit at 40 tokens.
# The shipped student's states stay within ~1e-6 of a full pass (tests allow 1e-4).
CANCELLATION = 4.0
# Softmax weights are exp(score − reference max). Below about −87 the result leaves float32's
# normal range and exp takes a scalar path some 30x slower, which peaked attention rows hit all
# the time; a weight of e^−80 is already far below the resolution of a sum holding a term near 1,
# so arguments are clamped there.
EXP_FLOOR = -80.0


@dataclass
class EditStats:
    macs: int = 0  # multiply-accumulates of this edit, all of them
    dirty: list[int] = field(default_factory=list)  # |D| per layer
    flipped: list[int] = field(default_factory=list)  # rows outside D whose code changed, per layer
    moved: int = 0  # kept tokens given a new virtual position
    refreshed: int = 0  # rows recomputed in full for drift control


@dataclass
class Totals:
    """Running counts over an engine's life, for its stats."""

    edits: int = 0
    refresh_updates: int = 0  # rows refreshed after max_updates running updates
    refresh_cancellation: int = 0  # rows refreshed because an update removed most of their mass
    refresh_tie: int = 0  # rows refreshed before a near-tie quantization decision
    sweep_flips: int = 0  # sticky codes corrected by the refresh policy


@dataclass
class Costs:
    """What this engine's work takes on this machine, measured as it goes (moving averages):
    seconds per edit and per token of a full pass. Owners weigh a burst of edits against
    recomputing with them (`LiveDocument.apply_all`). The priors are this project's 2-core
    AMD EPYC with the shipped student, compiled (docs/bench/engine-sizes.json: edits 2.3-5 ms,
    full passes 2.0-2.1e-4 s per token from 32 to 512 tokens)."""

    edit_s: float = 4e-3
    build_s_per_token: float = 2e-4
    WEIGHT = 0.1  # of the newest measurement

    def note_edit(self, seconds: float) -> None:
        self.edit_s += self.WEIGHT * (seconds - self.edit_s)

    def note_build(self, seconds: float, tokens: int) -> None:
        if tokens >= 16:  # shorter passes are mostly overhead, not a rate
            self.build_s_per_token += self.WEIGHT * (seconds / tokens - self.build_s_per_token)

    def rebuild_is_cheaper(self, edits: int, tokens: int) -> bool:
        """Whether `edits` edits would take longer than full passes over `tokens` tokens."""
        return edits * self.edit_s > tokens * self.build_s_per_token


class IncrementalEngine:
    """Builds and edits segment states for one VQ model. Not thread-safe: one per worker."""

    def __init__(self, model: VQTransformer, mode: Mode = EXACT,
                 compiled: bool | None = None) -> None:
        """`compiled`: edits and full passes run the compiled path (default: wherever it can, on
        the CPU); False keeps them on the torch reference."""
        if not model.quantizable:
            raise ValueError("incremental inference needs fitted codebooks in every layer")
        self.model = model.eval()
        self.mode = mode
        self.totals = Totals()
        self.costs = Costs()
        c = model.config
        # Sums each group's Dh / G squared components as one product: (G, Dh) indicator rows.
        # A norm over slices of 8 is ~2.5x slower on the CPU.
        device = model.blocks[0].codebook.codewords.device
        self._group_sum = torch.eye(c.codebook_groups, device=device).repeat_interleave(
            c.head_dim // c.codebook_groups, dim=1)
        # The codewords' |c|² (Q, 1, K) per layer, kept: computing them at every codebook
        # decision cost ~1.5% of an edit, and the model does not change while an engine lives.
        with torch.no_grad():
            self._squared_norms = {block: block.codebook.squared_norms() for block in model.blocks}
        if compiled is None:
            compiled = available(model)
        self._compiled = CompiledLayers(model, mode.delta) if compiled else None

    def empty(self) -> SegmentState:
        c = self.model.config
        layers = [LayerState.empty(c.n_heads, c.head_dim, c.n_codes, c.codebook_size,
                                   block.attention.qkv_dtype) for block in self.model.blocks]
        residual = [torch.zeros(0, c.d_model) for _ in range(c.n_layers)]
        return SegmentState(torch.zeros(0, dtype=torch.long), canonical(0),
                            torch.zeros(0, dtype=torch.long), layers, residual,
                            torch.zeros(0, c.d_model), torch.zeros(c.d_model, dtype=torch.float64))

    def build(self, ids: list[int], positions: torch.Tensor | None = None) -> SegmentState:
        """A fresh state for a segment's model input; canonical positions unless given."""
        state = self.empty()
        self.apply(state, 0, 0, ids, positions)
        return state

    def compact(self, state: SegmentState) -> SegmentState:
        """The same tokens at canonical positions, computed exactly: the idle-time rebuild."""
        return self.build(state.ids.tolist())

    @property
    def compiled(self) -> bool:
        """Whether edits and full passes run the compiled path."""
        return self._compiled is not None

    def forced(self, ids: list[int], positions: torch.Tensor,
               codes: torch.Tensor) -> SegmentState:
        """A compiled full pass at `positions` in which every head takes its code from codes
        (L, T, Q) instead of the nearest codeword; `verify` checks states against it. Its slack
        is left unset: a state to read, not to edit."""
        state = self.empty()
        self.apply(state, 0, 0, ids, positions, codes)
        return state

    @torch.inference_mode()
    def apply(self, state: SegmentState, start: int, end: int, new_ids: list[int],
              positions: torch.Tensor | None = None,
              codes: torch.Tensor | None = None) -> EditStats:
        """Replace tokens [start, end) (text order) of the state by `new_ids`, in place.

        `positions` (len(new_ids),) forces the inserted tokens' virtual positions (tests and
        full passes at chosen positions); otherwise they are placed between their neighbours.
        `codes` (L, len(new_ids), Q) forces their codes: a compiled full pass only (`forced`).
        """
        if not 0 <= start <= end <= len(state):
            raise ValueError(f"edit [{start}, {end}) is outside the segment [0, {len(state)}]")
        if codes is not None and (len(state) or not self.compiled):
            raise ValueError("forced codes need a compiled engine and an empty state")
        began = time.perf_counter()
        counter = self.model.counter
        before = counter.macs
        stats = EditStats()
        old_positions = state.positions  # (T,) text order
        if positions is None:
            placed = place(old_positions, start, end, len(new_ids),
                           self.model.config.max_positions)
            new_positions, moved = placed.positions, placed.moved
        else:
            new_positions = torch.cat([old_positions[:start], positions.double(),
                                       old_positions[end:]])
            moved = []
        stats.moved = len(moved)
        if not (self._edit_compiled(state, start, end, new_ids, new_positions, moved, codes,
                                    stats) if self.compiled else
                self._edit_torch(state, start, end, new_ids, new_positions, moved, stats)):
            # Half the rows or more are dirty from the start: a full pass at the same positions
            # costs less than the edit (its products are large and its attention whole).
            state.become(self.build(state.ids.tolist(), state.positions))
            layers = len(self.model.blocks)
            stats.dirty, stats.flipped = [len(state)] * layers, [0] * layers
            stats.macs = counter.macs - before
            return stats
        size = len(state)
        state.sweep = (state.sweep + self.mode.sweep) % max(size, 1)
        stats.macs = counter.macs - before
        self.totals.edits += 1
        if size == len(new_ids):
            self.costs.note_build(time.perf_counter() - began, size)
        else:
            self.costs.note_edit(time.perf_counter() - began)
        return stats

    def _edit_compiled(self, state: SegmentState, start: int, end: int, new_ids: list[int],
                       new_positions: torch.Tensor, moved: list[int],
                       codes: torch.Tensor | None, stats: EditStats) -> bool:
        """The edit in one call of compiled code: slots, the embedding, every layer of
        `_layers_torch`, the final norm and the pooled sum. False, with only the tokens and
        positions changed, where it would cost more than a full pass."""
        state.reserve(len(state) + max(len(new_ids) - (end - start), 0))
        done = self._compiled.apply(state, start, end, new_ids, new_positions, moved, codes,
                                    self.mode)
        if done is None:
            return False
        stats.dirty, stats.flipped, counts = done
        stats.refreshed = counts["refreshed"]
        self.model.counter.add(counts["macs"])
        for name in ("refresh_updates", "refresh_cancellation", "refresh_tie", "sweep_flips"):
            setattr(self.totals, name, getattr(self.totals, name) + counts[name])
        return True

    def _edit_torch(self, state: SegmentState, start: int, end: int, new_ids: list[int],
                    new_positions: torch.Tensor, moved: list[int], stats: EditStats) -> bool:
        """The edit in torch, the reference: `_edit_compiled` computes the same state."""
        model = self.model
        # What the removed tokens take with them: their keys and values at every layer, and
        # their outputs, out of the segment's total.
        removed = state.order[start:end]
        gone = [(st.k[:, removed].float(), st.v[:, removed].float())
                for st in state.layers]  # (H, R, Dh)
        state.total -= state.output[removed].double().sum(0)

        new_slots = self._allocate(state, start, end, len(new_ids))
        state.slot_ids[new_slots] = torch.tensor(new_ids, dtype=torch.long)
        state.slot_positions[state.order] = new_positions
        size = len(state)
        rank = torch.empty(size, dtype=torch.long)  # text index of each slot
        rank[state.order] = torch.arange(size)
        is_new = torch.zeros(size, dtype=torch.bool)
        is_new[new_slots] = True
        # Each row's limit lies between max_updates / 2 and max_updates, so that rows built
        # together are not all refreshed by the same edit.
        limit = self.mode.max_updates - rank % (self.mode.max_updates + 1) // 2  # (T,)

        turn = self._turn(state)  # the slots the sticky refresh policy re-quantizes
        # (|D|,) dirty slots: new tokens' and moved ones', distinct (unique took 40 µs)
        rows = torch.cat([new_slots, state.order[moved]]).sort().values
        if 2 * len(rows) > size > len(new_slots):
            return False
        x = model.embed(state.slot_ids[rows], state.slot_positions[rows])  # (|D|, D)
        rows, x = self._layers_torch(state, rows, x, is_new, gone, start, end, rank, limit,
                                     turn, stats)
        final = model.final_norm(x)  # (|D|, D)
        kept = rows[~is_new[rows]]
        state.total += final.double().sum(0) - state.output[kept].double().sum(0)
        state.output[rows] = final
        return True

    def _layers_torch(self, state: SegmentState, rows: torch.Tensor, x: torch.Tensor,
                      is_new: torch.Tensor, gone: list[tuple[torch.Tensor, torch.Tensor]],
                      start: int, end: int, rank: torch.Tensor, limit: torch.Tensor,
                      turn: torch.Tensor, stats: EditStats) -> tuple[torch.Tensor, torch.Tensor]:
        """Every layer of an edit in torch: rows (|D|,) dirty slots whose new input is x
        (|D|, D). Returns the slots the last layer wrote and their outputs."""
        for layer, (block, st) in enumerate(zip(self.model.blocks, state.layers, strict=True)):
            stats.dirty.append(len(rows))
            kept = rows[~is_new[rows]]  # dirty rows that held the same token before
            inputs = state.residual[layer]  # (S, D)
            inputs[rows] = x
            leaving = _Leaving(torch.cat([gone[layer][0], st.k[:, kept].float()], dim=1),
                               torch.cat([gone[layer][1], st.v[:, kept].float()], dim=1),
                               torch.cat([torch.full((end - start,), start), rank[kept]]))
            flips = self._layer(block, st, leaving, rows, x, rank, limit, inputs, turn, stats)
            stats.flipped.append(len(flips))
            rows = torch.cat([rows, flips]).unique()  # sorted
            x = block.finish(inputs[rows], block.codebook.lookup(st.codes[rows].long()))
        return rows, x

    @staticmethod
    def _allocate(state: SegmentState, start: int, end: int, inserted: int) -> torch.Tensor:
        """Slots for the inserted tokens; updates `state.order`. Returns the new tokens' slots.

        New tokens reuse the removed tokens' slots first, then take fresh ones at the end; the
        slots removed tokens leave free are filled with the last rows, so slots in use stay
        [0, T).
        """
        size, order = len(state), state.order
        removed = order[start:end]
        fresh = torch.arange(size, size + max(inserted - len(removed), 0))
        state.reserve(size + len(fresh))
        order = torch.cat([order[:start], removed[:inserted], fresh, order[end:]])
        freed = removed[inserted:]
        if len(freed):
            n = size - len(freed)
            is_freed = torch.zeros(size, dtype=torch.bool)
            is_freed[freed] = True
            movers = (~is_freed[n:]).nonzero().squeeze(1) + n  # rows in use past the new end
            targets = freed[freed < n].sort().values  # free slots inside it
            state.move_rows(targets, movers)
            remap = torch.arange(size)
            remap[movers] = targets
            order = remap[order]
        state.order = order
        return order[start:start + inserted]

    def _layer(self, block: Block, st: LayerState, leaving: "_Leaving", rows: torch.Tensor,
               x: torch.Tensor, rank: torch.Tensor, limit: torch.Tensor, inputs: torch.Tensor,
               turn: torch.Tensor, stats: EditStats) -> torch.Tensor:
        """Attention and quantization of one layer for an edit.

        rows (|D|,) sorted slots whose input is now x (|D|, D). Returns the slots outside D
        whose code flipped.
        """
        causal = block.attention.causal
        q, k, v = (t.transpose(0, 1) for t in block.projections(x))  # (H, |D|, Dh)
        # exact in the state's type: the model rounded them to it
        st.q[:, rows], st.k[:, rows], st.v[:, rows] = (t.to(st.q.dtype) for t in (q, k, v))
        clean = torch.ones(len(rank), dtype=torch.bool)
        clean[rows] = False
        refresh, moved = self._update_rows(st, leaving, rows, rank, limit, clean, causal)
        if len(refresh):
            stats.refreshed += len(refresh)
            q = torch.cat([q, block.queries(inputs[refresh]).transpose(0, 1)], dim=1)
        self._attend(st, torch.cat([rows, refresh]), q, rank, causal)

        # Which codes to decide: rows in D (nearest), rows that moved past their slack or were
        # refreshed (the mode's rule), and the refresh policy's turn (nearest).
        swept = turn[clean[turn]]
        check = torch.cat([moved, refresh, swept]).unique()
        decide = torch.cat([rows, check])
        nearest = torch.cat([torch.ones(len(rows), dtype=torch.bool), torch.isin(check, swept)])
        before = st.codes[check].long()  # (R, Q)
        codes, slack, ties = self._quantize(block, st, decide, nearest)
        ties &= st.updates[decide] > 0  # rows computed in full just now are already exact
        if ties.any():
            tied = decide[ties]
            self._attend(st, tied, block.queries(inputs[tied]).transpose(0, 1), rank, causal)
            self.totals.refresh_tie += len(tied)
            codes[ties], slack[:, ties], _ = self._quantize(block, st, tied, nearest[ties])
        st.codes[decide], st.slack[:, decide] = codes, slack
        flipped = (codes[len(rows):].long() != before).any(1)  # (R,)
        self.totals.sweep_flips += int((flipped & nearest[len(rows):]).sum())
        return check[flipped]

    def _update_rows(self, st: LayerState, leaving: "_Leaving", rows: torch.Tensor,
                     rank: torch.Tensor, limit: torch.Tensor, clean: torch.Tensor,
                     causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Running softmax update of the clean rows.

        Returns the rows due for a full refresh, and the other rows whose head outputs moved
        past their slack. `limit` (T,) is each row's number of running updates before it is
        refreshed.

        Every row in use is updated at once, in place: rows in D are recomputed afterwards
        anyway, and a causal row before the edit sees none of the changed keys, so it gains
        exactly zero.
        """
        size, (n_heads, _, head_dim) = len(rank), st.k.shape
        n_old = leaving.k.shape[1]
        n_keys = n_old + len(rows)
        if not size or not n_keys:
            return rows[:0], rows[:0]
        if causal:
            order = torch.cat([leaving.order, rank[rows]])  # (R + |D|,) text index of each key
            visible = order.unsqueeze(1) <= rank.unsqueeze(0)  # (R + |D|, T)
            touched = clean & visible.any(0)  # (T,)
            pairs = int(visible[:, clean].sum())
        else:
            touched, pairs = clean, int(clean.sum()) * n_keys
        if 2 * n_keys > size:  # cheaper to recompute the touched rows in full
            return touched.nonzero().squeeze(1), rows[:0]
        self.model.counter.add(2 * pairs * n_heads * head_dim)

        # Key-major (keys × queries): MKL multiplies this way round about 2x faster than
        # queries × keys when there are only a few keys.
        # The few keys are scaled rather than the scores of every query.
        keys = torch.cat([leaving.k, st.k[:, rows].float()], dim=1)  # (H, R + |D|, Dh)
        keys /= math.sqrt(head_dim)
        values = torch.cat([leaving.v, st.v[:, rows].float()], dim=1)  # (H, R + |D|, Dh)
        scores = torch.bmm(keys, st.q[:, :size].float().transpose(1, 2))  # (H, R + |D|, T)
        if causal:
            scores.masked_fill_(~visible.unsqueeze(0), -math.inf)
        m_old, s_old = st.m[:, :size], st.s[:, :size]  # (H, T) views
        m_new = torch.maximum(m_old, scores[:, n_old:].amax(1)) if len(rows) else m_old
        weights = _exp(scores.sub_(m_new.unsqueeze(1)))  # (H, R + |D|, T)
        if causal:
            weights.masked_fill_(~visible.unsqueeze(0), 0)
        removed = weights[:, :n_old].sum(1)  # (H, T) softmax mass taken away
        weights[:, :n_old].neg_()
        s_kept = s_old * _exp(m_old - m_new)  # (H, T)
        added = weights.sum(1)  # (H, T) net softmax mass added
        s_new = s_kept + added
        # h' = (h·s_kept + Σ w·v) / s_new, so h' − h = Σ (w / s_new)·v − h·(Σ w / s_new); in
        # place, and divided before the product, as (H, T, Dh) are the largest arrays an edit
        # touches.
        heads = st.heads[:, :size]  # (H, T, Dh) a view
        weights /= s_new.unsqueeze(1)
        change = torch.bmm(weights.transpose(1, 2), values)  # (H, T, Dh)
        change.addcmul_(heads, (added / s_new).unsqueeze(-1), value=-1)
        heads.add_(change)
        m_old.copy_(m_new)
        s_old.copy_(s_new)
        slack = st.slack[:, :size]  # (Q, T) a view
        shift = torch.matmul(self._group_sum, change.square_().transpose(1, 2))  # (H, G, T)
        slack.view(shift.shape).sub_(shift.sqrt_())
        updates = st.updates[:size].add_(touched)  # (T,)
        tired = updates >= limit  # (T,)
        cancelled = ~tired & (removed > CANCELLATION * s_new).any(0)  # (T,)
        refresh = (touched & (tired | cancelled)).nonzero().squeeze(1)
        n_tired = int(tired[refresh].sum())
        self.totals.refresh_updates += n_tired
        self.totals.refresh_cancellation += len(refresh) - n_tired
        moved = (touched & (slack < 0).any(0)).index_fill_(0, refresh, False)  # (T,)
        return refresh, moved.nonzero().squeeze(1)

    def _attend(self, st: LayerState, rows: torch.Tensor, q: torch.Tensor, rank: torch.Tensor,
                causal: bool) -> None:
        """Recompute the softmax statistics of `rows` from their queries q (H, R, Dh) float32."""
        if not len(rows):
            return
        size, (n_heads, _, head_dim) = len(rank), st.k.shape
        scores = torch.bmm(q / math.sqrt(head_dim),
                           st.k[:, :size].float().transpose(1, 2))  # (H, R, T)
        if causal:
            future = rank.unsqueeze(0) > rank[rows].unsqueeze(1)  # (R, T)
            scores.masked_fill_(future.unsqueeze(0), -math.inf)
            pairs = int((rank[rows] + 1).sum())
        else:
            pairs = len(rows) * size
        self.model.counter.add(2 * pairs * n_heads * head_dim)
        m = scores.amax(-1)  # (H, R)
        weights = _exp(scores.sub_(m.unsqueeze(-1)))  # (H, R, T)
        if causal:
            weights.masked_fill_(future.unsqueeze(0), 0)
        s = weights.sum(-1)  # (H, R)
        st.m[:, rows], st.s[:, rows] = m, s
        st.heads[:, rows] = torch.bmm(weights, st.v[:, :size].float()) / s.unsqueeze(-1)
        st.updates[rows] = 0

    def _quantize(self, block: Block, st: LayerState, rows: torch.Tensor,
                  nearest: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Codes (R, Q), slack (Q, R) and near-tie flags (R,) of `rows` under the mode's rule.

        Rows where `nearest` (R,) holds take the nearest codeword whatever their current code.
        A row is a near tie (R,) when some group could move less than TIE × its head output's
        norm before its decision changes.
        """
        heads = st.heads[:, rows]  # (H, R, Dh)
        square = block.codebook.head_distances(heads, self._squared_norms[block])  # (Q, R, K)
        current = st.codes[rows].T.long()  # (Q, R)
        # Reductions with indices are ~8x slower than amin on these sizes: the nearest codeword's
        # index is searched for only where the code changes. Square roots of (Q, R) values only.
        d_best, d_current = (d.clamp_(min=0).sqrt_() for d in (
            square.amin(-1), square.gather(-1, current.unsqueeze(-1)).squeeze(-1)))  # (Q, R)
        keep = (d_current <= (1 + self.mode.delta) * d_best) & ~nearest  # (Q, R)
        # Flat indices, searched once, rather than a boolean mask searched at each use; argmin
        # takes the first of twin codewords. A full pass changes every code: no copy then.
        changing = (~keep).view(-1).nonzero().squeeze(1)  # (C,) into Q·R
        codes = current.clone(memory_format=torch.contiguous_format)  # (Q, R)
        flat = square.view(-1, square.shape[-1])  # (Q·R, K)
        codes.view(-1)[changing] = (flat if len(changing) == len(flat) else flat[changing]
                                    ).argmin(-1)
        d_code = torch.where(keep, d_current, d_best)  # (Q, R)
        # The nearest other codeword: the code's own is masked in place (square is not needed
        # after this; topk is several times slower on these sizes).
        d_other = square.scatter_(-1, codes.unsqueeze(-1), math.inf).amin(-1).clamp_(min=0).sqrt_()
        # Code c stays valid while |h − c| ≤ (1 + δ)·|h − c'| for every other codeword c'.
        # Moving h by ε changes each distance by at most ε, so c stays valid while
        # d_c + ε ≤ (1 + δ)(d_other − ε), i.e. ε ≤ ((1 + δ)·d_other − d_code) / (2 + δ).
        slack = ((1 + self.mode.delta) * d_other - d_code) / (2 + self.mode.delta)  # (Q, R)
        norm = torch.linalg.vector_norm(heads, dim=-1).unsqueeze(1)  # (H, 1, R)
        by_head = slack.view(len(heads), len(slack) // len(heads), len(rows))  # (H, G, R)
        ties = (by_head < TIE * norm).flatten(0, 1).any(0)  # (R,)
        return codes.T.to(st.codes.dtype), slack, ties

    def _turn(self, state: SegmentState) -> torch.Tensor:
        """The slots the sticky refresh policy re-quantizes exactly at this edit (none in exact
        mode); each layer takes those of them that are not dirty."""
        size = len(state)
        count = min(self.mode.sweep, size) if self.mode.delta > 0 else 0
        return state.order[(torch.arange(count) + state.sweep) % max(size, 1)]


def _exp(x: torch.Tensor) -> torch.Tensor:
    """exp(x) in place, arguments clamped at EXP_FLOOR (x holds score − reference max ≤ 0)."""
    return x.clamp_(min=EXP_FLOOR).exp_()


@dataclass(frozen=True)
class _Leaving:
    """Keys and values an edit takes away at one layer, with where they sat in the text."""

    k: torch.Tensor  # (H, R, Dh)
    v: torch.Tensor  # (H, R, Dh)
    order: torch.Tensor  # (R,) text index among the new tokens; deleted ones at the edit
