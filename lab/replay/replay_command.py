"""`vqedit replay LOG`: run an edit log through the engine, a daemon or the language server.

Usage:
    vqedit replay demo.jsonl --via engine --verify 50 --json out.json --csv out.csv --plot out.png
    vqedit replay demo.jsonl --via daemon             # a private daemon started for the run
    vqedit replay demo.jsonl --via daemon --shared-daemon   # the user's own daemon
    vqedit replay demo.jsonl --via lsp                # `vqedit lsp` over stdio, as an editor

The log is read and checked whole before anything starts: a bad record (a truncated last line,
an unknown field, an edit outside the text, a version going backwards) stops the replay with
an error naming its line, or with `--skip-bad` is left out and counted. Each change is sent
alone and its results awaited before the next, so a latency is one edit's. Every `--verify N`
edits the target is checked against a full recomputation (`targets.py` says how per
target). The document's label is printed whenever it changes, or its score by 0.1.

Operation counts come from the engine's counter in the run itself: in process for `--via
engine`, from the `cost` the daemon's results carry for `--via daemon` (`docs/protocol.md`),
and from the `cost` in the server's `vqedit/status` for `--via lsp` (`docs/lsp.md`). They are
compared with a paragraph cache (`lab/bench/paragraph_cache.py`): dense passes of the segments
each edit touched, in MACs (`ops_ratio_*`) and in milliseconds costed from ONNX Runtime int8
passes timed at a few lengths before the replay starts (`paragraph_cache_ms_*`).
"""

import argparse
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from vqedit.daemon.paths import Paths
from vqedit.daemon.settings import Settings, SettingsError, resolve
from vqedit.engine.checkpoint import ModelLoadError
from vqedit.lab.bench.onnx_baseline import BUILD
from vqedit.lab.bench.paragraph_cache import ParagraphBaseline
from vqedit.lab.plots import reference_line
from vqedit.lab.private_daemon import daemon_model_arguments, private_daemon_dirs
from vqedit.lab.replay.targets import DaemonTarget, EngineTarget, LspTarget, Outcome, Target
from vqedit.lsp import editlog
from vqedit.main import CliError

VIAS = ("engine", "daemon", "lsp")
SCORE_STEP = 0.1  # the label is printed again when its score has moved this much
MEASURED_BY = {"engine": "the engine's counter, in process",
               "daemon": "the engine's counter, carried in the daemon's results",
               "lsp": "the engine's counter, carried in the server's vqedit/status"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", type=Path, help="an edit log (docs/edit-log.md)")
    parser.add_argument("--via", choices=VIAS, default="engine")
    parser.add_argument("--verify", type=int, default=0, metavar="N",
                        help="check against a full recomputation every N edits (0: never)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave out bad records (counted) instead of stopping")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--csv", type=Path, help="write one row per edit here")
    parser.add_argument("--plot", type=Path, help="write a PNG: latency, savings, dirty tokens")
    parser.add_argument("--quiet", action="store_true", help="do not print label changes")
    parser.add_argument("--shared-daemon", action="store_true",
                        help="daemon/lsp: use the user's daemon instead of a private one")
    add_daemon_model_arguments(parser)
    parser.add_argument("--debounce-ms", type=int, default=0,
                        help="lsp: the server's debounceMs setting during the replay")
    parser.add_argument("--onnx-cache", type=Path, default=BUILD,
                        help="where the ONNX exports of the base model are cached (the "
                             "paragraph-cache baseline's timings)")


def add_daemon_model_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model (as `vqedit daemon run` takes them)")
    model.add_argument("--model", help="base model directory (needs --student)")
    model.add_argument("--student", type=Path, help="student file (default: the shipped one)")
    model.add_argument("--head", type=Path, help="head file (default: the shipped BBC head)")
    model.add_argument("--delta", type=float, help="sticky hysteresis; 0 is exact mode")
    model.add_argument("--sweep", type=int, help="sticky refresh tokens per layer and edit")
    model.add_argument("--device", choices=["auto", "cpu", "cuda"])
    model.add_argument("--threads", type=int, help="torch threads (engine, daemon worker)")


@dataclass
class Row:
    line: int  # the change record's line in the log
    uri: str
    version: int
    outcome: Outcome
    touched: list[int] = field(default_factory=list)  # model-input tokens of each segment a
    # paragraph cache would recompute after this change
    baseline_macs: int | None = None  # those recomputations' MACs (None: no baseline kept)
    paragraph_cache_ms: float | None = None  # and their cost in ms (None: not costed)


@dataclass
class Run:
    rows: list[Row] = field(default_factory=list)
    verified: int = 0
    failures: list[str] = field(default_factory=list)  # "uri vN (line L)" of failed checks
    label_changes: int = 0


MODEL_OPTIONS = ("model", "student", "head", "delta", "sweep", "device", "threads")


def settings_of(args: argparse.Namespace) -> Settings:
    try:
        return resolve(None, {name: getattr(args, name) for name in MODEL_OPTIONS})
    except SettingsError as e:
        raise CliError(str(e)) from None


def daemon_args(args: argparse.Namespace, verify: bool) -> list[str]:
    """Options for a private daemon: the model options given; idle compaction, which a
    verification waits for, only when verifying (at the daemon's usual delay, so that it does
    not start between two edits of the replay)."""
    found = daemon_model_arguments(args, MODEL_OPTIONS)
    return found if verify else [*found, "--compact-after-s", "3600"]


def play(loaded: editlog.Loaded, target: Target, verify_every: int, quiet: bool = True,
         baseline: ParagraphBaseline | None = None) -> Run:
    """Send every step to `target`; verify every `verify_every` changes; with a `baseline`,
    cost each change in its paragraph cache (after the target's latency was measured)."""
    run, labels = Run(), {}  # uri → the (label, score) printed last
    changes = sum(isinstance(s.record, editlog.Change) for s in loaded.steps)
    with tqdm(total=changes, desc="replay", unit="edit") as bar:
        for step in loaded.steps:
            record = step.record
            if isinstance(record, editlog.Open):
                target.open(step)
                if baseline is not None:
                    baseline.cache.open(record.uri, step.text, record.language)
            elif isinstance(record, editlog.Close):
                target.close(step)
                if baseline is not None:
                    baseline.cache.close(record.uri)
            else:
                outcome = target.change(step)
                row = Row(step.line, record.uri, record.version, outcome)
                if baseline is not None:
                    row.touched = baseline.cache.change(record.uri, step.text)
                    row.baseline_macs = baseline.macs(row.touched)
                    row.paragraph_cache_ms = baseline.ms(row.touched)
                run.rows.append(row)
                shown = labels.get(record.uri)
                if shown is None or shown[0] != outcome.label:
                    run.label_changes += shown is not None
                if shown is None or shown[0] != outcome.label or abs(
                        (outcome.score or 0) - (shown[1] or 0)) >= SCORE_STEP:
                    labels[record.uri] = (outcome.label, outcome.score)
                    if not quiet:
                        score = "" if outcome.score is None else f" ({outcome.score:.2f})"
                        tqdm.write(f"{record.uri} v{record.version}: {outcome.label}{score}")
                bar.update()
                if verify_every and len(run.rows) % verify_every == 0:
                    run.verified += 1
                    if not target.verify(record.uri, step.text):
                        run.failures.append(f"{record.uri} v{record.version} (line {step.line})")
    return run


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def report(args: argparse.Namespace, loaded: editlog.Loaded, run: Run, described: dict,
           final: dict, baseline: ParagraphBaseline | None = None) -> dict[str, Any]:
    latency = [r.outcome.latency_ms for r in run.rows]
    ratios = _ratios(run)
    document_ratios = [r.outcome.dense_macs / r.outcome.macs for r in run.rows
                       if r.outcome.macs and r.outcome.dense_macs is not None]
    dirty = [d for r in run.rows for d in r.outcome.dirty]
    tokens = [r.outcome.tokens for r in run.rows if r.outcome.tokens is not None]
    cached_ms = [r.paragraph_cache_ms for r in run.rows if r.paragraph_cache_ms is not None]
    return {
        "replay": str(args.log), "via": args.via, **described,
        "edits": len(run.rows),
        "documents": len(loaded.uris),
        "bad_records": len(loaded.bad),
        "tokens_median": _pct(tokens, 50),
        "latency_ms_p50": _pct(latency, 50),
        "latency_ms_p90": _pct(latency, 90),
        "latency_ms_p99": _pct(latency, 99),
        "ops_ratio_median": _pct(ratios, 50),
        "ops_ratio_p10": _pct(ratios, 10),
        "ops_ratio_p90": _pct(ratios, 90),
        "ops_baseline": "dense passes of the segments each edit touched (what a paragraph "
                        "cache recomputes), per edit",
        "document_ops_ratio_median": _pct(document_ratios, 50),  # against a dense pass over the
        # whole document, the baseline before the paragraph cache's
        "touched_tokens_median": _pct([sum(r.touched) for r in run.rows], 50)
        if baseline is not None else None,
        "paragraph_cache_free_edits": sum(not r.touched for r in run.rows)
        if baseline is not None else None,  # edits that changed no segment's tokens
        "paragraph_cache_ms_p50": _pct(cached_ms, 50),
        "paragraph_cache_ms_p90": _pct(cached_ms, 90),
        "paragraph_cache_ms_p99": _pct(cached_ms, 99),
        "paragraph_cache_baseline": None if baseline is None else baseline.how,
        "paragraph_cache_ms_by_tokens": None if baseline is None or baseline.costs is None
        else {str(n): round(ms, 3) for n, ms in zip(baseline.costs.lengths, baseline.costs.ms,
                                                    strict=True)},
        "free_edits": sum(r.outcome.macs == 0 for r in run.rows),  # nothing recomputed
        "savings_measured_by": None if not ratios else MEASURED_BY[args.via],
        "dirty_tokens_per_layer": [round(float(v), 2) for v in np.mean(dirty, 0)]
        if dirty else [],
        "verified": run.verified,
        "verify_failures": len(run.failures),
        "failed_checks": run.failures,
        "label_changes": run.label_changes,
        "final": final,
    }


def _ratios(run: Run) -> list[float]:
    """The paragraph cache's MACs over incremental MACs per measured edit; an edit that
    recomputed nothing (a change no token saw) has no finite ratio and is counted in
    `free_edits` instead."""
    return [r.baseline_macs / r.outcome.macs for r in run.rows
            if r.outcome.macs and r.baseline_macs is not None]


def write_csv(run: Run, path: Path) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["line", "uri", "version", "latency_ms", "label", "score", "macs",
                         "dense_macs", "baseline_macs", "ops_ratio", "tokens", "touched_tokens",
                         "paragraph_cache_ms", "dirty_per_layer"])
        for row in run.rows:
            o = row.outcome
            ratio = row.baseline_macs / o.macs if o.macs and row.baseline_macs is not None else ""
            dirty = ";".join("/".join(map(str, d)) for d in o.dirty)
            writer.writerow([row.line, row.uri, row.version, round(o.latency_ms, 3), o.label,
                             "" if o.score is None else round(o.score, 4),
                             "" if o.macs is None else o.macs,
                             "" if o.dense_macs is None else o.dense_macs,
                             "" if row.baseline_macs is None else row.baseline_macs,
                             "" if ratio == "" else round(ratio, 3),
                             "" if o.tokens is None else o.tokens,
                             ";".join(map(str, row.touched)),
                             "" if row.paragraph_cache_ms is None
                             else round(row.paragraph_cache_ms, 3), dirty])


def plot(run: Run, result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, ops, dirty) = plt.subplots(1, 3, figsize=(15, 4))
    values = np.sort([r.outcome.latency_ms for r in run.rows])
    latency.plot(values, np.linspace(0, 1, len(values)), label=f"vqedit via {result['via']}")
    cached = np.sort([r.paragraph_cache_ms for r in run.rows if r.paragraph_cache_ms])
    if len(cached):
        latency.plot(cached, np.linspace(0, 1, len(cached)),
                     label="paragraph cache (ONNX Runtime int8, costed)")
    latency.set_xscale("log")
    latency.set_xlabel(f"ms per edit, change → results (via {result['via']})")
    latency.set_ylabel("share of edits (ECDF)")
    reference_line(latency, result["latency_ms_p50"], f"p50 {result['latency_ms_p50']:.1f} ms")
    ratios = _ratios(run)
    if ratios:
        ops.scatter(range(len(ratios)), ratios, s=4)
        ops.set_yscale("log")
        reference_line(ops, result["ops_ratio_median"],
                       f"median {result['ops_ratio_median']:.0f}x", vertical=False)
    else:
        ops.text(0.5, 0.5, "not measured", ha="center", transform=ops.transAxes)
    ops.set_xlabel("edit")
    ops.set_ylabel("dense MACs (touched segments) / incremental")
    per_layer = [d for r in run.rows for d in r.outcome.dirty]
    if per_layer:
        layers = np.array(per_layer)  # (edits, L)
        x = np.arange(layers.shape[1])
        dirty.bar(x, layers.mean(0), label="mean")
        dirty.plot(x, np.percentile(layers, 90, axis=0), "k_", markersize=20, label="p90")
        dirty.legend()
    else:
        dirty.text(0.5, 0.5, "not measured", ha="center", transform=dirty.transAxes)
    dirty.set_xlabel("layer")
    dirty.set_ylabel("dirty tokens per edited segment")
    fig.suptitle(f"replay of {Path(result['replay']).name}: {result['edits']} edits via "
                 f"{result['via']}, {result['model']}, {result['mode']}, "
                 f"{result['threads'] or 'default'} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(result: dict) -> str:
    ops = result["ops_ratio_median"]
    saved = ("not measured" if ops is None
             else f"{ops:.1f}x fewer than dense passes of the touched segments (median)")
    checks = (f"{result['verified'] - result['verify_failures']}/{result['verified']} "
              f"checks passed" if result["verified"] else "not verified")
    return (f"{result['edits']} edits via {result['via']}: keystroke latency p50 "
            f"{result['latency_ms_p50']} ms, p99 {result['latency_ms_p99']} ms; operations: "
            f"{saved}; {checks}")


def load_log(path: Path, skip_bad: bool) -> editlog.Loaded:
    try:
        loaded = editlog.read(path, skip_bad)
    except FileNotFoundError:
        raise CliError(f"no such edit log: {path}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text") from None
    except editlog.LogError as e:
        raise CliError(f"{path}: {e} (--skip-bad leaves such records out)") from None
    for error in loaded.bad:
        tqdm.write(f"skipped {path}: {error}")
    if not any(isinstance(s.record, editlog.Change) for s in loaded.steps):
        raise CliError(f"{path} has no usable change records")
    return loaded


def run(args: argparse.Namespace) -> int:
    if args.verify < 0:
        raise CliError(f"--verify must be ≥ 0, got {args.verify}")
    loaded = load_log(args.log, args.skip_bad)
    settings = settings_of(args)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        # Before any target starts, so that the timings share the machine with nothing.
        baseline = ParagraphBaseline.prepare(settings.model, args.via == "lsp",
                                             torch.get_num_threads(), args.onnx_cache)
        if args.via == "engine":
            replay = _play(EngineTarget(settings), loaded, args, baseline)
        elif args.shared_daemon:
            replay = _play(_remote(args, settings, None), loaded, args, baseline)
        else:
            with private_daemon_dirs() as paths:
                replay = _play(_remote(args, settings, paths), loaded, args, baseline)
    except ModelLoadError as e:
        raise CliError(str(e)) from None
    result = report(args, loaded, replay[0], replay[1], replay[2], baseline)
    line = json.dumps(result, ensure_ascii=False)
    if args.json:
        args.json.write_text(line + "\n")
    if args.csv:
        write_csv(replay[0], args.csv)
    if args.plot:
        plot(replay[0], result, args.plot)
    if not args.quiet:
        print(summary(result))
    print(line)
    return 0 if not result["verify_failures"] else 1


def _play(target: Target, loaded: editlog.Loaded, args: argparse.Namespace,
          baseline: ParagraphBaseline) -> tuple[Run, dict, dict]:
    try:
        played = play(loaded, target, args.verify, args.quiet, baseline)
        return played, target.describe(), target.final()  # a daemon loads its model lazily
    finally:
        target.stop()


def _remote(args: argparse.Namespace, settings: Settings, paths: Paths | None) -> Target:
    """The daemon or LSP target: with `paths`, one that starts a private daemon there."""
    extra = daemon_args(args, args.verify > 0) if paths is not None else []
    if args.via == "daemon":
        return DaemonTarget(settings, extra, paths or Paths.default(), private=paths is not None)
    return LspTarget(settings, extra, paths or Paths.default(), paths is not None,
                     args.debounce_ms)
