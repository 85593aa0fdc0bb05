"""The paragraph-cache baseline of `vqedit replay`: what each edit of a log would have cost a
tool that keeps a dense model's results per paragraph and, after an edit, recomputes the
paragraphs it touched with dense full passes.

That is the rival an incremental engine must beat on real edits; a dense pass over the whole
document is not (nobody recomputes untouched paragraphs). A paragraph here is a segment as the
engine cuts them (`engine/segments.py`: paragraphs, and pieces of those longer than the window),
so both sides are charged for the same units. A segment is touched when its model input (token
ids, special tokens included) is that of no segment the document had before the edit: the cache
is keyed by content, so a segment that only moved costs nothing, nor does an edit no token sees.

Per edit it costs
- operations: the MACs of dense full passes over the touched segments (`full_pass_macs`, the
  formula the engine's counter is checked against), the baseline of the replay's `ops_ratio`;
- milliseconds: not timed edit by edit (that would slow the replay's own measurements) but
  costed from medians of dense ONNX Runtime int8 passes timed at a few lengths when the replay
  starts, interpolated linearly between them (`SizeCosts`), the segments' times added up.

The replay segments the log's texts itself, with the base model's tokenizer and window and the
engine's own `Document`, whichever the target: neither the engine's per-edit stats (a count of
rebuilt segments, one `EditStats` per edited one) nor the daemon's `cost` (a dense pass over the
whole document) say how long the touched segments are. For `--via lsp` Markdown's code is
blanked first, as the language server blanks it before the daemon sees the text.
"""

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqedit.engine.checkpoint import load
from vqedit.engine.document import Document
from vqedit.engine.model import VQConfig, full_pass_macs
from vqedit.engine.tokens import Tokenizer
from vqedit.lab.bench.onnx_baseline import INT8, Dense, OnnxError, export, unavailable, version
from vqedit.main import CliError
from vqedit.text.markdown import mask

SMALLEST = 8  # the shortest length timed; shorter segments cost what it costs (overhead-bound)
REPEATS = 5  # timed passes per length, after one untimed: their median is the length's cost


class ParagraphCache:
    """Per open document, the segments a paragraph cache holds (their model inputs, counted)."""

    def __init__(self, tokenizer: Tokenizer, max_positions: int, blank_markdown: bool) -> None:
        self.tokenizer = tokenizer
        self.max_positions = max_positions
        self.blank_markdown = blank_markdown  # as `vqedit lsp` does for Markdown documents
        self.cached: dict[str, Counter[tuple[int, ...]]] = {}
        self.markdown: dict[str, bool] = {}

    def open(self, uri: str, text: str, language: str | None) -> None:
        self.markdown[uri] = self.blank_markdown and (language or "markdown") == "markdown"
        self.cached[uri] = self._segments(uri, text)

    def change(self, uri: str, text: str) -> list[int]:
        """The new text's segments that the cache does not hold (recomputed, then held): the
        length of each in model-input tokens."""
        held, now = self.cached[uri], self._segments(uri, text)
        touched = [len(ids) for ids, n in (now - held).items() for _ in range(n)]
        self.cached[uri] = now
        return touched

    def close(self, uri: str) -> None:
        del self.cached[uri], self.markdown[uri]

    def _segments(self, uri: str, text: str) -> Counter[tuple[int, ...]]:
        document = Document(self.tokenizer, mask(text) if self.markdown[uri] else text,
                            self.max_positions)
        return Counter(tuple(document.model_input(s)) for s in document.segments)


@dataclass(frozen=True)
class SizeCosts:
    """Milliseconds of one dense pass at a few lengths; other lengths interpolated linearly."""

    lengths: list[int]  # ascending
    ms: list[float]  # the median time at each

    def __call__(self, tokens: int) -> float:
        return float(np.interp(tokens, self.lengths, self.ms))

    @classmethod
    def measure(cls, dense: Dense, max_positions: int, vocab_size: int) -> "SizeCosts":
        """Time `dense` at SMALLEST, twice that, … and the window: REPEATS passes each."""
        lengths = sorted({*(2 ** k for k in range(SMALLEST.bit_length() - 1,
                                                  max_positions.bit_length())
                            if 2 ** k <= max_positions), max_positions})
        generator = torch.Generator().manual_seed(0)
        medians = []
        for tokens in lengths:
            ids = torch.randint(0, vocab_size, (1, tokens), generator=generator).numpy()
            dense(ids)  # the first pass at a new length allocates
            medians.append(statistics.median(dense.time_ms(ids) for _ in range(REPEATS)))
        return cls(lengths, medians)


@dataclass
class ParagraphBaseline:
    """The paragraph cache of a replay, with what its recomputations cost."""

    cache: ParagraphCache
    config: VQConfig  # the base model's: `full_pass_macs` needs its sizes
    costs: SizeCosts | None  # None: ONNX Runtime is not installed
    how: str  # the report's `paragraph_cache_baseline`: how the milliseconds were had

    @classmethod
    def prepare(cls, model: str | None, blank_markdown: bool, threads: int,
                onnx_cache: Path) -> "ParagraphBaseline":
        """Load the base model `model` (None: all-MiniLM-L6-v2) in this process; where ONNX
        Runtime is installed, export it (cached) and time its int8 passes at a few lengths."""
        loaded = load(model)
        window = loaded.model.config.max_positions
        cache = ParagraphCache(loaded.tokenizer, window, blank_markdown)
        reason = unavailable()
        if reason is not None:
            return cls(cache, loaded.model.config, None, f"not costed: {reason}")
        try:
            exported = export(loaded.hf_model, loaded.name, window, onnx_cache)
        except OnnxError as e:
            raise CliError(str(e)) from None
        costs = SizeCosts.measure(Dense(exported.int8, threads), window,
                                  loaded.hf_model.config.vocab_size)
        how = (f"costed, not timed per edit: dense passes of each edit's touched segments, "
               f"priced from the median of {REPEATS} ONNX Runtime int8 passes (CPU) of "
               f"{loaded.name} "
               f"timed at {', '.join(map(str, costs.lengths))} tokens when the replay started "
               f"(linear in between), {threads} thread{'s' * (threads != 1)}; "
               f"onnxruntime {version()}, {INT8}")
        return cls(cache, loaded.model.config, costs, how)

    def macs(self, touched: list[int]) -> int:
        """Dense full passes over segments of these lengths."""
        return sum(full_pass_macs(self.config, tokens) for tokens in touched)

    def ms(self, touched: list[int]) -> float | None:
        return None if self.costs is None else sum(self.costs(tokens) for tokens in touched)
