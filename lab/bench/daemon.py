"""`vqedit bench daemon`: edit-to-result latency through a real daemon, alone and under load.

Usage:
    vqedit bench daemon [--student FILE --model DIR --head FILE] [--tokens 512] [--edits 200]
                        [--clients 8] [--documents 10] [--rounds 20] [--device auto|cpu|cuda]
                        [--threads N] [--json PATH]

Starts a fresh daemon in private directories (never the user's), then
1. one client types `--edits` one-character insertions into a document of about `--tokens`
   tokens, waiting for each result: `edit_ms_p50`, `edit_ms_p99` (change sent → result
   received);
2. `--clients` clients with `--documents` documents each type `--rounds` insertions into every
   document at once, without waiting: `load.edit_ms_*` (for versions that got results),
   `edits_per_s`, `lost` (documents whose last version never got results) and `out_of_order`
   (results older than one already delivered).
Prints one JSON line (and writes it to `--json`), with the daemon's `rss_mb` at the end.
"""

import argparse
import contextlib
import json
import random
import statistics
import threading
import time
from pathlib import Path

from vqedit.daemon.client import DaemonClient
from vqedit.daemon.paths import Paths
from vqedit.daemon.protocol import Results
from vqedit.lab.corpus import bbc_articles
from vqedit.lab.private_daemon import (
    DAEMON_MODEL_OPTIONS,
    add_daemon_model_arguments,
    daemon_model_arguments,
    private_daemon_dirs,
)
from vqedit.text.edit import Edit

WORDS_PER_TOKEN = 0.75  # English prose under WordPiece: the document is about --tokens long


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_daemon_model_arguments(parser)
    parser.add_argument("--tokens", type=int, default=512, help="document length, about")
    parser.add_argument("--edits", type=int, default=200, help="single-client edits")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--documents", type=int, default=10, help="per client")
    parser.add_argument("--rounds", type=int, default=20, help="edits per document under load")
    parser.add_argument("--threads", type=int, help="torch threads of the daemon's worker")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"),
                        help="where the daemon runs the model (the daemon's default: auto)")
    parser.add_argument("--json", type=Path, help="also write the JSON here")


def _document(index: int, tokens: int) -> str:
    words = " ".join(a.text for a in bbc_articles()[index * 3:index * 3 + 3]).split()
    return " ".join(words[:int(tokens * WORDS_PER_TOKEN)])


def _ms(samples: list[float], q: float) -> float | None:
    if not samples:
        return None
    return round(statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]
                 if len(samples) > 1 else samples[0], 3)


class Recorder:
    """Send and receive times per (client, uri, version); called from client reader threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[tuple[int, str, int], float] = {}
        self.latency: list[float] = []
        self.newest: dict[tuple[int, str], int] = {}
        self.out_of_order = 0

    def received(self, client: int, results: Results) -> None:
        now = time.perf_counter()
        with self.lock:
            key = (client, results.uri)
            if results.version < self.newest.get(key, -1):
                self.out_of_order += 1
            self.newest[key] = max(results.version, self.newest.get(key, -1))
            sent = self.sent.pop((client, results.uri, results.version), None)
            if sent is not None:
                self.latency.append((now - sent) * 1000)


def run(args: argparse.Namespace) -> int:
    daemon_args = daemon_model_arguments(args, (*DAEMON_MODEL_OPTIONS, "threads", "device"))
    with private_daemon_dirs() as paths:
        rng = random.Random(0)
        with DaemonClient(daemon_args=[*daemon_args, "--compact-after-s", "3600"],
                          paths=paths) as client:
            single = _single(client, _document(0, args.tokens), args.edits, rng)
            load = _load(args, daemon_args, paths, rng)
            stats = client.stats()
            client.shutdown()
    report = {**single, "edits_per_s": load["edits_per_s"], "lost": load["lost"],
              "out_of_order": load["out_of_order"], "rss_mb": stats["rss_mb"], "load": load,
              "model": stats["model"], "mode": stats["mode"], "device": stats["device"],
              "tokens": args.tokens}
    line = json.dumps(report)
    if args.json:
        args.json.write_text(line + "\n")
    print(line)
    return 0


def _single(client: DaemonClient, text: str, edits: int, rng: random.Random) -> dict:
    client.open("single", text, 0)
    client.wait_for("single", 0, timeout=600)
    latency = []
    for version in range(1, edits + 1):
        at = rng.randrange(len(client.text("single")) + 1)
        started = time.perf_counter()
        client.change("single", version, [Edit(at, at, rng.choice("aeiou "))])
        client.wait_for("single", version, timeout=600)
        latency.append((time.perf_counter() - started) * 1000)
    client.close("single")
    return {"edit_ms_p50": _ms(latency, 50), "edit_ms_p99": _ms(latency, 99), "edits": edits}


def _load(args: argparse.Namespace, daemon_args: list[str], paths: Paths,
          rng: random.Random) -> dict:
    recorder = Recorder()
    clients = [DaemonClient(daemon_args=daemon_args, paths=paths,
                            on_results=lambda r, c=c: recorder.received(c, r))
               for c in range(args.clients)]
    uris = [f"doc-{d}" for d in range(args.documents)]
    for c, client in enumerate(clients):
        for d, uri in enumerate(uris):
            client.open(uri, _document(1 + (c * args.documents + d) % 50, args.tokens), 0)
    for client in clients:
        for uri in uris:
            client.wait_for(uri, 0, timeout=600)
    seeds = [rng.randrange(2**32) for _ in clients]

    def type_into(c: int) -> None:
        local, client = random.Random(seeds[c]), clients[c]
        for version in range(1, args.rounds + 1):
            for uri in uris:
                at = local.randrange(len(client.text(uri)) + 1)
                with recorder.lock:
                    recorder.sent[(c, uri, version)] = time.perf_counter()
                client.change(uri, version, [Edit(at, at, local.choice("aeiou "))])

    started = time.perf_counter()
    threads = [threading.Thread(target=type_into, args=(c,)) for c in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + 600
    for client in clients:
        for uri in uris:
            with contextlib.suppress(TimeoutError):  # counted as lost below
                client.wait_for(uri, args.rounds, timeout=max(deadline - time.monotonic(), 0.1))
    elapsed = time.perf_counter() - started
    lost = sum(1 for c in range(len(clients)) for uri in uris
               if recorder.newest.get((c, uri), -1) < args.rounds)
    for client in clients:
        client.disconnect()
    edits = len(clients) * len(uris) * args.rounds
    return {"edit_ms_p50": _ms(recorder.latency, 50), "edit_ms_p99": _ms(recorder.latency, 99),
            "edits_per_s": round(edits / elapsed, 1), "lost": lost,
            "out_of_order": recorder.out_of_order, "clients": len(clients),
            "documents": len(clients) * len(uris), "edits": edits}
