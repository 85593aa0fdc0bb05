"""`vqedit bench engine`: what an edit costs incrementally, against full passes, side by side.

Usage:
    vqedit bench engine --tokens 512 --edits 200 --kinds mixed --mode sticky --delta 8.0 \\
        --threads 2 --json bench.json --plot bench.png
    vqedit bench engine --tokens 32,64,128,256,512 --edits 50 --plot scaling.png

BBC News articles, cut to one segment of `--tokens` model-input tokens, receive random atomic
edits (one word or one character inserted, deleted or replaced) in sequence, as a person types.
After every edit, in one process and on the same text: (a) a full dense pass of the
`transformers` model (torch), (b) the same dense pass in ONNX Runtime, fp32 and dynamically
quantized to int8 (`onnx_baseline.py`; skipped, with a note in the JSON, when the `bench` extra
is not installed), (c) a full VQ pass, (d) for causal models, a pass that reuses the key/value
cache up to the edit, and (e) the incremental update. Every few edits the incremental state is
verified against full passes (lab/verify.py). Operation counts come from the one counter both
paths share; times are medians of single runs, on `--threads` threads (ONNX Runtime's too).
`--tokens` may list several lengths: the run is repeated for each, one JSON line per length.
"""

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vqedit.engine.checkpoint import LoadedModel
from vqedit.engine.heads import pooled
from vqedit.engine.incremental import IncrementalEngine
from vqedit.engine.live import LiveDocument
from vqedit.engine.mode import STICKY_DELTA, Mode
from vqedit.engine.model import full_pass_macs
from vqedit.lab.bench.onnx_baseline import (
    BUILD,
    INT8,
    Dense,
    OnnxError,
    export,
    unavailable,
    version,
)
from vqedit.lab.corpus import Article, bbc_articles
from vqedit.lab.edits.atomic import KINDS, random_edit
from vqedit.lab.machine import cpu
from vqedit.lab.plots import reference_line
from vqedit.lab.train.kmeans import fit_codebooks
from vqedit.lab.verify import verify
from vqedit.main import CliError
from vqedit.model_choice import add_model_arguments, load_model

FIT_ARTICLES = range(0, 400, 20)  # k-means codebooks are fitted on these articles...
BENCH_ARTICLES = range(1000, 2225)  # ...and the benchmark documents come from these
# Documents start this many tokens short of --tokens, room for edits to grow them; one is left
# for the next when it has grown past half of that room, so that no edit splits its segment.
GROWTH = 16
ORT_BASELINES = ("ort_fp32", "ort_int8")  # the ONNX Runtime sessions, as the JSON names them


def sizes(value: str) -> list[int]:
    """`--tokens`: one length or a comma list of them (`32,64,128`)."""
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a length or a comma list of lengths, got {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--tokens", type=sizes, default=[512],
                        help="segment length in tokens, or a comma list of lengths "
                             "(32,64,128): one run and one JSON line per length")
    parser.add_argument("--edits", type=int, default=200, help="edits in all")
    parser.add_argument("--edits-per-doc", type=int, default=50,
                        help="edits typed into one document before the next one is opened")
    parser.add_argument("--kinds", choices=[*KINDS, "mixed"], default="mixed")
    parser.add_argument("--mode", choices=["exact", "sticky"], default="sticky")
    parser.add_argument("--delta", type=float, default=STICKY_DELTA,
                        help="sticky mode's hysteresis δ")
    parser.add_argument("--sweep", type=int, default=2,
                        help="sticky mode: tokens per layer re-quantized exactly per edit")
    parser.add_argument("--codebook-size", type=int, default=64,
                        help="codewords per head when k-means codebooks must be fitted")
    parser.add_argument("--check-every", type=int, default=5,
                        help="verify the state against full passes every N edits")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the JSON lines to this file")
    parser.add_argument("--plot", type=Path,
                        help="write a PNG here: latency against segment length for vqedit and "
                             "the dense baselines, and the largest length's savings and latency")
    parser.add_argument("--onnx-cache", type=Path, default=BUILD,
                        help="where the ONNX exports of the base model are cached")


@dataclass
class Samples:
    """Per-edit measurements."""

    ops_ratio: list[float] = field(default_factory=list)  # dense MACs / incremental MACs
    wall_ratio: list[float] = field(default_factory=list)  # dense time / incremental time
    edit_ms: list[float] = field(default_factory=list)
    dense_ms: list[float] = field(default_factory=list)
    full_pass_ms: list[float] = field(default_factory=list)  # the engine's: an open, a fallback
    prefix_ms: list[float] = field(default_factory=list)
    prefix_ops_ratio: list[float] = field(default_factory=list)  # dense MACs / prefix-reuse MACs
    baseline_ms: dict[str, list[float]] = field(default_factory=dict)  # ONNX Runtime dense
    # passes (ORT_BASELINES), ms per edit, on the same ids as `dense_ms`
    dirty: list[list[int]] = field(default_factory=list)  # per edit, |D| per layer
    flipped: list[list[int]] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    rebuilt: int = 0  # edits that re-segmented the document
    documents: int = 0
    checks: list[bool] = field(default_factory=list)
    cosines: list[float] = field(default_factory=list)
    bytes_per_token: list[float] = field(default_factory=list)
    allocated_per_token: list[float] = field(default_factory=list)
    embeddings: list[torch.Tensor] = field(default_factory=list)  # (D,) pooled, after each edit
    full_embeddings: list[torch.Tensor] = field(default_factory=list)  # (D,) by a full VQ pass


def run(args: argparse.Namespace) -> int:
    if min(args.tokens) < 32 or min(args.edits, args.edits_per_doc, args.check_every) < 1:
        raise CliError("--tokens must be ≥ 32; --edits, --edits-per-doc and --check-every ≥ 1")
    if args.threads < 1:
        raise CliError(f"--threads must be ≥ 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    loaded = load_model(args)
    window = loaded.model.config.max_positions
    if max(args.tokens) > window:
        raise CliError(f"--tokens {max(args.tokens)} exceeds the model's window of {window}")
    codebooks = _ensure_codebooks(loaded, args.codebook_size)
    mode = Mode(delta=args.delta if args.mode == "sticky" else 0.0, sweep=args.sweep)
    baselines, described = ort_baselines(loaded, args.threads, args.onnx_cache)
    corpus = bbc_articles()  # read once: it reads every article's file
    articles = [corpus[i] for i in BENCH_ARTICLES]
    if args.json:
        args.json.write_text("")
    runs = []
    for tokens in args.tokens:
        samples, engine = bench(loaded, mode, documents(loaded, tokens, articles), args,
                                baselines)
        settings = {"model": loaded.description, "codebooks": codebooks, "tokens": tokens,
                    "threads": args.threads, "kinds": args.kinds}
        report = {**engine_report(settings, loaded, mode, samples, engine), **described, **cpu()}
        line = json.dumps(report)
        print(line, flush=True)
        if args.json:
            with args.json.open("a") as out:
                out.write(line + "\n")
        runs.append((samples, report))
    if args.plot:
        _plot(runs, args.plot)
    return 0


def ort_baselines(loaded: LoadedModel, threads: int,
                  cache: Path) -> tuple[dict[str, Dense], dict[str, object]]:
    """The ONNX Runtime sessions of the base model, fp32 and int8, and what the JSON says of
    them. Without the `bench` extra there are none: a note on stderr and in the JSON (the
    `speedup_vs_ort_*` figures are then null), so the rest of the benchmark still runs."""
    reason = unavailable()
    if reason is not None:
        print(f"vqedit bench engine: ONNX Runtime baselines skipped: {reason}", file=sys.stderr)
        return {}, {"ort_baselines": f"skipped: {reason}",
                    **{f"speedup_vs_{name}_median": None for name in ORT_BASELINES}}
    try:
        exported = export(loaded.hf_model, loaded.name, loaded.model.config.max_positions, cache)
    except OnnxError as e:
        raise CliError(str(e)) from None
    sessions = {"ort_fp32": Dense(exported.fp32, threads),
                "ort_int8": Dense(exported.int8, threads)}
    return sessions, {"ort_baselines": f"onnxruntime {version()}, CPU; int8: {INT8}",
                      "onnx_cache": str(exported.folder),
                      "ort_int8_pooled_cosine_min": exported.meta.get("int8_pooled_cosine_min")}


def bench(loaded: LoadedModel, mode: Mode, texts: Iterator[str], args: argparse.Namespace,
          baselines: dict[str, Dense] | None = None) -> tuple[Samples, IncrementalEngine]:
    """Type `args.edits` random edits into the texts in turn, measuring every one (and timing
    the dense `baselines` on each edit's segment).

    Uses `args.edits`, `edits_per_doc`, `kinds`, `check_every` and `seed`: the same arguments
    and texts give the same edits in any mode.
    """
    engine = IncrementalEngine(loaded.model, mode)
    kinds = KINDS if args.kinds == "mixed" else (args.kinds,)
    vocabulary = sorted({w for a in bbc_articles()[:200] for w in a.text.split() if w.isalpha()})
    rng = random.Random(args.seed)
    samples = Samples()
    with tqdm(total=args.edits, desc=f"edits ({mode.name})", unit="edit") as bar:
        for text in texts:
            live = LiveDocument(engine, loaded.tokenizer, text)
            samples.documents += 1
            for _ in range(min(args.edits_per_doc, args.edits - len(samples.edit_ms))):
                if len(live.document.tokens) > live.document.window - GROWTH // 2:
                    break  # the next edit could split the segment: go on with a new document
                _measure(live, random_edit(live.text, rng, kinds, vocabulary), loaded, samples,
                         baselines or {})
                if len(samples.edit_ms) % args.check_every == 0:
                    _check(live, samples)
                bar.update()
            state = live.states[0]
            samples.bytes_per_token.append(state.nbytes() / len(state))
            samples.allocated_per_token.append(state.nbytes(allocated=True) / len(state))
            if len(samples.edit_ms) == args.edits:
                break
    return samples, engine


def _ensure_codebooks(loaded: LoadedModel, size: int) -> str:
    """Fit k-means codebooks when the model has none; say which codebooks the figures used."""
    model, tokenizer = loaded.model, loaded.tokenizer
    if model.quantizable:
        return "trained"
    if size != model.config.codebook_size:
        raise CliError(f"the model was loaded with {model.config.codebook_size} codewords per "
                       f"head, not {size}")
    articles = bbc_articles()
    length = min(256, model.config.max_positions) - len(tokenizer.prefix) - len(tokenizer.suffix)
    inputs = [torch.tensor([tokenizer.wrap(tokenizer.encode(articles[i].text).ids[:length])])
              for i in FIT_ARTICLES]
    fit_codebooks(model, inputs)
    return (f"k-means, K={size}, fitted on {len(inputs)} BBC articles "
            f"({length} tokens each)")


def documents(loaded: LoadedModel, tokens: int, articles: list[Article]) -> Iterator[str]:
    """Text of about `tokens` model-input tokens, one paragraph (a single segment) each."""
    tokenizer = loaded.tokenizer
    room = tokens - len(tokenizer.prefix) - len(tokenizer.suffix) - GROWTH
    text = ""
    for article in articles:
        text = f"{text} {' '.join(article.text.split())}".strip()
        encoded = tokenizer.encode(text)
        if len(encoded) >= room:
            yield text[:encoded.ends[room - 1]]
            text = ""
    raise CliError(f"the BBC corpus ran out of documents of {tokens} tokens")


def _measure(live: LiveDocument, edit, loaded: LoadedModel, samples: Samples,
             baselines: dict[str, Dense]) -> None:
    model, hf = loaded.model, loaded.hf_model
    old_ids = live.states[0].ids if len(live.states) == 1 else None
    start = time.perf_counter()
    stats = live.apply(edit)
    edit_s = time.perf_counter() - start
    if len(live.states) != 1:
        raise CliError("an edit split the benchmark segment in two")
    ids = live.states[0].ids.unsqueeze(0)  # (1, T)
    dense = full_pass_macs(model.config, ids.shape[1])
    with torch.no_grad():
        start = time.perf_counter()
        hf(input_ids=ids)
        dense_s = time.perf_counter() - start
        for name, session in baselines.items():
            samples.baseline_ms.setdefault(name, []).append(session.time_ms(ids.numpy()))
        full = model(ids).hidden[0]  # (T, D) the exact reference
    start = time.perf_counter()
    live.engine.build(ids[0].tolist())
    full_pass_s = time.perf_counter() - start
    model.counter.reset()
    samples.rebuilt += stats.rebuilt
    samples.ops_ratio.append(dense / max(stats.macs, 1))
    samples.wall_ratio.append(dense_s / edit_s)
    samples.edit_ms.append(edit_s * 1000)
    samples.dense_ms.append(dense_s * 1000)
    samples.full_pass_ms.append(full_pass_s * 1000)
    samples.tokens.append(ids.shape[1])
    samples.embeddings.append(live.embedding())
    samples.full_embeddings.append(pooled([full]))
    for edited in stats.edited:
        samples.dirty.append(edited.dirty)
        samples.flipped.append(edited.flipped)
    if model.config.causal and old_ids is not None:
        _measure_prefix_reuse(loaded, old_ids, ids[0], dense, samples)


def _measure_prefix_reuse(loaded: LoadedModel, old: torch.Tensor, new: torch.Tensor,
                          dense_macs: int, samples: Samples) -> None:
    """A causal model's usual trick: keep the key/value cache up to the edit, redo the rest."""
    same = int((old[:len(new)] == new[:len(old)]).cumprod(0).sum()) if len(old) else 0
    keep = min(same, len(new) - 1)  # at least one token is recomputed
    hf, c = loaded.hf_model, loaded.model.config
    with torch.no_grad():
        cache = hf(input_ids=new[:keep].unsqueeze(0), use_cache=True).past_key_values if keep \
            else None
        start = time.perf_counter()
        hf(input_ids=new[keep:].unsqueeze(0), past_key_values=cache, use_cache=True)
        samples.prefix_ms.append((time.perf_counter() - start) * 1000)
    rows = len(new) - keep
    pairs = sum(i + 1 for i in range(keep, len(new)))
    macs = c.n_layers * (rows * (4 * c.d_model ** 2 + 2 * c.d_model * c.d_ff)
                         + 2 * pairs * c.d_model)
    samples.prefix_ops_ratio.append(dense_macs / macs)


def _check(live: LiveDocument, samples: Samples) -> None:
    verdict = verify(live.engine, live.states[0])
    exact = live.engine.mode.delta == 0
    samples.checks.append(verdict.exact() if exact else verdict.mechanics())
    samples.cosines.append(verdict.cosine)
    live.engine.model.counter.reset()


def engine_report(settings: dict, loaded: LoadedModel, mode: Mode, samples: Samples,
                  engine: IncrementalEngine) -> dict:
    """The benchmark's JSON object; `settings` names the model, codebooks, tokens, threads and
    edit kinds."""
    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(values, q)), 4) if values else None

    c = loaded.model.config
    report = {
        "bench": "engine",
        "model": settings["model"],
        "family": c.family,
        "codebooks": settings["codebooks"],
        "tokens": settings["tokens"],
        "tokens_median": pct(samples.tokens, 50),
        "threads": settings["threads"],
        "weights": loaded.model.weights,
        "edits": len(samples.edit_ms),
        "documents": samples.documents,
        "kinds": settings["kinds"],
        "mode": mode.name,
        "delta": mode.delta,
        "sweep": mode.sweep if mode.delta > 0 else 0,
        "ops_ratio_median": pct(samples.ops_ratio, 50),
        "ops_ratio_p10": pct(samples.ops_ratio, 10),
        "ops_ratio_p90": pct(samples.ops_ratio, 90),
        "wall_ratio_median": pct(samples.wall_ratio, 50),
        "speedup_vs_torch_median": pct(samples.wall_ratio, 50),  # torch dense ms / edit ms
        **{f"speedup_vs_{name}_median": pct(_speedups(values, samples.edit_ms), 50)
           for name, values in samples.baseline_ms.items()},
        "edit_ms_p10": pct(samples.edit_ms, 10),
        "edit_ms_p50": pct(samples.edit_ms, 50),
        "edit_ms_p90": pct(samples.edit_ms, 90),
        "edit_ms_p99": pct(samples.edit_ms, 99),
        "full_ms_p10": pct(samples.dense_ms, 10),
        "full_ms_p50": pct(samples.dense_ms, 50),
        "full_ms_p90": pct(samples.dense_ms, 90),
        **{f"{name}_ms_p{q}": pct(values, q)
           for name, values in samples.baseline_ms.items() for q in (10, 50, 90)},
        "full_pass_ms_p50": pct(samples.full_pass_ms, 50),
        "dirty_tokens_per_layer": [round(float(v), 2) for v in np.mean(samples.dirty, 0)]
        if samples.dirty else [],
        "flipped_per_layer": [round(float(v), 2) for v in np.mean(samples.flipped, 0)]
        if samples.flipped else [],
        "resegmented_edits": samples.rebuilt,
        "checked": len(samples.checks),
        "exact_agreement": round(sum(samples.checks) / len(samples.checks), 4)
        if samples.checks else None,
        "cosine_vs_exact_median": pct(samples.cosines, 50),
        "cosine_vs_exact_min": round(min(samples.cosines), 6) if samples.cosines else None,
        "state_bytes_per_token": round(float(np.median(samples.bytes_per_token))),
        "state_bytes_allocated_per_token": round(float(np.median(samples.allocated_per_token))),
        "refreshes": {k: v for k, v in engine.totals.__dict__.items() if k != "edits"},
    }
    if c.causal:
        report["prefix_ops_ratio_median"] = pct(samples.prefix_ops_ratio, 50)
        report["prefix_ms_p50"] = pct(samples.prefix_ms, 50)
    return report


def _speedups(baseline_ms: list[float], edit_ms: list[float]) -> list[float]:
    """Per edit: the baseline's time over the incremental update's."""
    return [b / e for b, e in zip(baseline_ms, edit_ms, strict=True)]


def _plot(runs: list[tuple[Samples, dict]], path: Path) -> None:
    """Left: median ms per edit (p10–p90 shaded) against segment length, log-log, for vqedit
    and each dense baseline. Middle and right: the largest length's savings and latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, (scaling, savings, latency) = plt.subplots(1, 3, figsize=(16, 4.5))
    runs = sorted(runs, key=lambda run: run[1]["tokens"])
    lengths = [report["tokens_median"] for _, report in runs]  # as measured, below --tokens
    for label, of in (("vqedit (incremental)", lambda s: s.edit_ms),
                      ("torch dense", lambda s: s.dense_ms),
                      ("ONNX Runtime fp32", lambda s: s.baseline_ms.get("ort_fp32", [])),
                      ("ONNX Runtime int8", lambda s: s.baseline_ms.get("ort_int8", []))):
        values = [of(samples) for samples, _ in runs]
        if not all(values):
            continue  # not measured (no `bench` extra)
        low, mid, high = (np.array([np.percentile(v, q) for v in values]) for q in (10, 50, 90))
        line, = scaling.plot(lengths, mid, marker="o", label=label)
        scaling.fill_between(lengths, low, high, color=line.get_color(), alpha=0.2)
    scaling.set_xscale("log")
    scaling.set_yscale("log")
    scaling.set_xticks(lengths, [f"{n:g}" for n in lengths])  # the measured lengths only
    scaling.xaxis.set_minor_formatter(ticker.NullFormatter())
    scaling.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    scaling.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    scaling.set_xlabel("segment length (tokens, median over edits)")
    scaling.set_ylabel("ms per edit (median, p10–p90)")
    scaling.legend()
    samples, report = runs[-1]
    low, high = min(samples.ops_ratio), max(samples.ops_ratio)  # below 1 on tiny models
    bins = np.logspace(math.log10(min(low, 1.0) * 0.9), math.log10(high * 1.1), 30)
    savings.hist(samples.ops_ratio, bins=bins, color="tab:blue")
    savings.set_xscale("log")
    savings.set_xlabel(f"dense MACs / incremental MACs, per edit ({report['tokens']} tokens)")
    savings.set_ylabel("edits")
    reference_line(savings, report["ops_ratio_median"],
                   f"median {report['ops_ratio_median']:.0f}x")
    for values, label in ((samples.edit_ms, "incremental"), (samples.dense_ms, "torch dense"),
                          (samples.baseline_ms.get("ort_fp32", []), "ONNX Runtime fp32"),
                          (samples.baseline_ms.get("ort_int8", []), "ONNX Runtime int8"),
                          (samples.full_pass_ms, "vqedit full pass"),
                          (samples.prefix_ms, "prefix reuse")):
        if values:
            latency.plot(np.sort(values), np.linspace(0, 1, len(values)), label=label)
    latency.set_xscale("log")
    latency.set_xlabel(f"ms per edit ({report['tokens']} tokens)")
    latency.set_ylabel("share of edits (ECDF)")
    latency.legend()
    fig.suptitle(f"{report['model']} ({report['codebooks'].split(',')[0]} codebooks, "
                 f"{report['weights']} weights), {report['threads']} thread(s), "
                 f"{report['mode']} mode (δ={report['delta']}), "
                 f"{report['kinds']} edits; {report['cpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
