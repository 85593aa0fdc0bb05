"""VQ models with k-means codebooks for engine tests, and the check every engine test calls."""

import copy

import torch

from tests.tiny import tiny_bert, tiny_opt
from vqedit.engine.checkpoint import from_hf
from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.model import VQTransformer
from vqedit.engine.state import SegmentState
from vqedit.engine.tokens import Tokenizer
from vqedit.lab.corpus import bbc_articles
from vqedit.lab.train.kmeans import fit_codebooks
from vqedit.lab.verify import verify


def tiny_vq(family: str, codebook_size: int = 16, codebook_groups: int = 1) -> VQTransformer:
    """A tiny random BERT or OPT with codebooks fitted on random token sequences."""
    hf = tiny_bert() if family == "bert" else tiny_opt()
    model = from_hf(hf, codebook_size=codebook_size, codebook_groups=codebook_groups)
    gen = torch.Generator().manual_seed(0)
    fit_codebooks(model, [torch.randint(3, 1000, (1, 60), generator=gen) for _ in range(16)])
    return model


def minilm_vq(dense: VQTransformer, tokenizer: Tokenizer) -> VQTransformer:
    """all-MiniLM-L6-v2 with 64-entry k-means codebooks fitted on BBC articles."""
    model = copy.deepcopy(dense)
    texts = [a.text for a in bbc_articles()[::300][:8]]
    fit_codebooks(model, [torch.tensor([tokenizer.wrap(tokenizer.encode(t).ids[:126])])
                          for t in texts])
    return model


def check_incremental(engine: IncrementalEngine, ids: list[int],
                      edits: list[tuple[int, int, list[int]]]) -> SegmentState:
    """Apply token edits in sequence; after each, the state must pass the mode's check.

    Exact mode: the state equals a full pass at the same virtual positions (near ties aside, see
    lab/verify.py). Sticky mode: it
    equals a full pass forced to its codes, and every code obeys the (1 + δ) rule. At the end,
    compaction must give the canonical full pass.
    """
    state = engine.build(ids)
    check = "exact" if engine.mode.delta == 0 else "mechanics"
    for number, (start, end, new) in enumerate(edits):
        engine.apply(state, start, end, new)
        verdict = verify(engine, state)
        assert getattr(verdict, check)(), f"after edit {number} {(start, end, new)}: {verdict}"
    compacted = engine.compact(state)
    assert torch.equal(compacted.positions, torch.arange(len(state), dtype=torch.float64))
    assert torch.equal(compacted.ids, state.ids)
    verdict = verify(engine, compacted)
    assert verdict.exact(), f"after compaction: {verdict}"
    return state
