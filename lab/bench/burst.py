"""`vqedit bench burst`: many changes in one didChange, against recomputing what they touched.

Usage:
    vqedit bench burst [--paragraphs 6] [--edits 100] [--words 20000] [--replace the=a]
                       [--threads 1] [--seed 0] [--json PATH]

Two bursts a user makes in one go, applied to a live document as the daemon applies a
coalesced batch (`LiveDocument.apply_all`: edit by edit, or merged into one edit that computes
each segment it changed once, whichever the engine's measured costs say is cheaper):
1. `scattered`: `--edits` one-character edits at random places of a text of `--paragraphs`
   BBC paragraphs;
2. `replace_all`: every whole word `--replace OLD=NEW` in a text of about `--words` words.
For each, after warming the engine's cost estimates on the same text: the burst's time and MACs,
against a full recompute of the final text (`recompute_ms`, as `vqedit.recompute` does) and
the dense MACs of the segments the burst touched. Prints one JSON line per burst.
"""

import argparse
import json
import random
import re
import time
from pathlib import Path

import torch

from vqedit.engine.checkpoint import LoadedModel
from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.live import LiveDocument
from vqedit.engine.mode import STICKY_DELTA, Mode
from vqedit.engine.model import full_pass_macs
from vqedit.lab.bench.paragraph_cache import ParagraphCache
from vqedit.lab.corpus import bbc_articles
from vqedit.lab.machine import cpu
from vqedit.main import CliError
from vqedit.model_choice import add_model_arguments, load_model
from vqedit.text.edit import Edit, apply_all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--paragraphs", type=int, default=6)
    parser.add_argument("--edits", type=int, default=100, help="scattered edits in the burst")
    parser.add_argument("--words", type=int, default=20_000, help="words of the replace-all text")
    parser.add_argument("--replace", default="the=a", help="OLD=NEW: whole words replaced")
    parser.add_argument("--delta", type=float, default=STICKY_DELTA)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the JSON lines to this file")


def run(args: argparse.Namespace) -> int:
    old, _, new = args.replace.partition("=")
    if not old.isalnum() or "=" not in args.replace:
        raise CliError(f"--replace wants OLD=NEW with a word for OLD, got {args.replace!r}")
    if min(args.paragraphs, args.edits, args.words, args.threads) < 1:
        raise CliError("--paragraphs, --edits, --words and --threads must be ≥ 1")
    torch.set_num_threads(args.threads)
    loaded = load_model(args)
    if not loaded.model.quantizable:
        raise CliError("the model has no trained codebooks: give --student FILE")
    engine = IncrementalEngine(loaded.model, Mode(delta=args.delta))
    articles = bbc_articles()
    paragraphs = [p.strip() for a in articles[1000:] for p in a.text.split("\n") if p.strip()]
    rng = random.Random(args.seed)
    short = "\n\n".join(paragraphs[:args.paragraphs])
    scattered = []
    text = short
    for _ in range(args.edits):
        at = rng.randrange(len(text))
        scattered.append(Edit(at, at + 1, rng.choice("aeiou")))
        text = scattered[-1].applied(text)
    long, count = "", 0
    for p in paragraphs:
        if count >= args.words:
            break
        long, count = f"{long}\n\n{p}" if long else p, count + len(p.split())
    replace_all = [Edit(m.start(), m.end(), new)
                   for m in reversed(list(re.finditer(rf"\b{re.escape(old)}\b", long)))]
    lines = []
    for name, base, burst in (("scattered", short, scattered), ("replace_all", long, replace_all)):
        lines.append({"bench": "burst", "burst": name, **_measure(engine, loaded, base, burst),
                      "model": loaded.description, "weights": loaded.model.weights,
                      "delta": args.delta, "threads": args.threads, **cpu()})
        print(json.dumps(lines[-1]))
    if args.json:
        args.json.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return 0


def _measure(engine: IncrementalEngine, loaded: LoadedModel, text: str,
             burst: list[Edit]) -> dict:
    """The burst applied to a live `text`, against a full recompute of the result."""
    counter = engine.model.counter
    warm = LiveDocument(engine, loaded.tokenizer, text)  # the engine's costs: builds and edits
    for edit in burst[:8]:
        warm.apply(edit)
    final = apply_all(text, burst)
    live = LiveDocument(engine, loaded.tokenizer, text)
    merged = live.batch(burst, final).merged
    before = counter.macs
    start = time.perf_counter()
    stats = live.apply_all(burst, after=final)  # as the daemon applies a coalesced batch
    live.embedding()
    burst_s = time.perf_counter() - start
    macs = counter.macs - before
    before = counter.macs
    start = time.perf_counter()
    fresh = LiveDocument(engine, loaded.tokenizer, final)
    fresh.embedding()
    recompute_s = time.perf_counter() - start
    recompute_macs = counter.macs - before
    cache = ParagraphCache(loaded.tokenizer, engine.model.config.max_positions, False)
    cache.open("burst", text, None)
    touched = cache.change("burst", final)  # what a paragraph cache would recompute
    dense_touched = sum(full_pass_macs(engine.model.config, n) for n in touched)
    return {"edits": len(burst), "tokens": fresh.tokens(), "segments": len(fresh.states),
            "merged": merged, "rebuilt_segments": stats.rebuilt,
            "edited_segments": len(stats.edited), "burst_ms": round(burst_s * 1000, 1),
            "recompute_ms": round(recompute_s * 1000, 1),
            "time_vs_recompute": round(burst_s / recompute_s, 3), "burst_macs": macs,
            "recompute_macs": recompute_macs, "dense_touched_macs": dense_touched,
            "macs_vs_dense_touched": round(macs / max(dense_touched, 1), 3)}

