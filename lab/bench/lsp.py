"""`vqedit bench lsp`: change-to-diagnostics latency of `vqedit lsp`, typed into as an editor does.

Usage:
    vqedit bench lsp --words 2000 --edits 200 --interval-ms 150 --debounce-ms 100 --json out.json

A real LSP client (`lab/replay/driver.py`, the driver `vqedit replay --via lsp` uses) starts
`vqedit lsp` over stdio in front of a private daemon, opens a Markdown document of `--words`
words of BBC News, and types atomic edits into it (`edits synth`'s typist) one every
`--interval-ms`, without waiting for results, as a person types (`--wait`: each keystroke waits
for the previous one's diagnostics, which measures every edit alone). For every version the server
computes, the latency is from the didChange that produced that version to the publishDiagnostics
of results computed for it (its `vqedit/status` says which version they were computed for),
minus the configured debounce; versions overtaken by newer ones while the server waited are
superseded, never computed. `change_to_any_diagnostics_ms_*` is to the first publishDiagnostics
at a version, which may carry older results moved onto it (docs/lsp.md, "Editing, debounce and
versions"), with nothing subtracted: how soon the user sees diagnostics placed on the text. A
publish older than one already sent is stale.
Prints one JSON line.
"""

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vqedit.daemon.client import DaemonClient
from vqedit.daemon.models import load_shared
from vqedit.lab.edits.synth import Typist, bbc_document, vocabulary
from vqedit.lab.private_daemon import private_daemon_dirs
from vqedit.lab.replay.driver import LspDriver
from vqedit.lab.replay.replay_command import add_daemon_model_arguments, daemon_args, settings_of
from vqedit.main import CliError

URI = "file:///bench.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--words", type=int, default=2000, help="document length in words")
    parser.add_argument("--edits", type=int, default=200, help="atomic edits typed")
    parser.add_argument("--interval-ms", type=float, default=150.0,
                        help="time between keystrokes (a brisk typist: 150)")
    parser.add_argument("--wait", action="store_true",
                        help="wait for each version's diagnostics before the next keystroke "
                             "(one edit's latency alone, however slow the model)")
    parser.add_argument("--debounce-ms", type=int, default=100,
                        help="the server's debounceMs setting, subtracted from latencies")
    add_daemon_model_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the JSON here")


def document(words: int) -> str:
    """At least `words` words of BBC News as Markdown, cut at a paragraph's end."""
    paragraphs, count, first = [], 0, 0
    while count < words:
        for paragraph in bbc_document(first, 1).split("\n\n"):
            if count >= words:
                break
            paragraphs.append(paragraph.strip())
            count += len(paragraph.split())
        first += 1
    return "\n\n".join(paragraphs) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.words < 10 or args.edits < 1 or args.interval_ms < 0 or args.debounce_ms < 0:
        raise CliError("--words ≥ 10, --edits ≥ 1, --interval-ms and --debounce-ms ≥ 0")
    text = document(args.words)
    settings = settings_of(args)
    tokens = len(load_shared(settings).tokenizer.encode(text).ids)
    typist = Typist(random.Random(args.seed), vocabulary(text))
    with private_daemon_dirs() as paths:
        daemon = DaemonClient(daemon_args=daemon_args(args, verify=False), paths=paths)
        daemon.connect()
        try:
            with LspDriver({"debounceMs": args.debounce_ms},
                           stderr=paths.log.with_name("lsp.log")) as lsp:
                sent = _type(lsp, typist, text, args)
                published = lsp.documents[URI].published
                computed = lsp.documents[URI].computed
                stale = lsp.documents[URI].stale
            stats = daemon.stats()
            daemon.shutdown()
        finally:
            daemon.disconnect()
    latency = _first_latency(computed, sent, args.debounce_ms)
    shown = _first_latency([(p.version, p.at) for p in published], sent, 0)
    report = {
        "bench": "lsp",
        "change_to_diagnostics_ms_p50": round(float(np.percentile(latency, 50)), 3),
        "change_to_diagnostics_ms_p99": round(float(np.percentile(latency, 99)), 3),
        "change_to_any_diagnostics_ms_p50": round(float(np.percentile(shown, 50)), 3),
        "change_to_any_diagnostics_ms_p99": round(float(np.percentile(shown, 99)), 3),
        "stale_publishes": stale,
        "edits": args.edits,
        "computed_versions": len(latency),
        "published_versions": len(shown),
        "interval_ms": args.interval_ms,
        "waited_for_each": args.wait,
        "debounce_ms": args.debounce_ms,
        "words": len(text.split()),
        "tokens": tokens,
        "model": stats["model"],
        "mode": stats["mode"],
        "device": stats["device"],
        "threads": args.threads,
    }
    line = json.dumps(report, ensure_ascii=False)
    if args.json:
        args.json.write_text(line + "\n")
    print(line)
    return 0


def _first_latency(arrivals: list[tuple[int, float]], sent: dict[int, float],
                   debounce_ms: int) -> list[float]:
    """Milliseconds from each typed version's didChange to its first arrival, less the debounce."""
    first: dict[int, float] = {}
    for version, at in arrivals:
        if version in sent:
            first.setdefault(version, at)
    return [(at - sent[version]) * 1000 - debounce_ms for version, at in first.items()]


def _type(lsp: LspDriver, typist: Typist, text: str, args: argparse.Namespace) -> dict[int, float]:
    """Open the document, wait until it is computed, then type; {version: didChange sent}."""
    lsp.open(URI, text, 0)
    lsp.wait_published(URI, 0)
    sent, next_at = {}, time.perf_counter()
    for version in tqdm(range(1, args.edits + 1), desc="typing", unit="edit"):
        edit, _ = typist.next_edit(text)
        time.sleep(max(0.0, next_at - time.perf_counter()))
        sent[version] = lsp.change(URI, version, lsp.content_changes(text, (edit,)))
        text = edit.applied(text)
        next_at = sent[version] + args.interval_ms / 1000
        if args.wait:
            lsp.wait_computed(URI, version)
    lsp.wait_computed(URI, args.edits)
    return sent
