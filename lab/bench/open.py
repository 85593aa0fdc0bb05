"""`vqedit bench open`: opening big documents through a real daemon, as an editor does.

Usage:
    vqedit bench open [--words 2000,20000,100000] [--timeout-s 900] [--json PATH] [--plot PNG]
                      [--student FILE --model DIR --head FILE] [--onnx-cache DIR]

For each size a fresh daemon starts in private directories (never the user's) and loads its
model on a one-line document. Then one client opens a Markdown document of BBC articles of about
that many words, while a second client types one-character edits into a small document, each
sent once the previous one has its results. One JSON line per size:
- `first_results_s`, `all_results_s`: open sent → the first results for the document, and the
  results of its opening version complete (the same while the daemon publishes a document's
  results at once);
- `baseline_ort_int8_s`: ONNX Runtime int8 (the dense base model) over the same segments, one
  thread, in this process: what recomputing every paragraph with an optimized runtime costs;
- `rss_mb_before` (model loaded), `rss_mb_peak` (during the open), `rss_mb_open` (results in),
  `rss_mb_after_close` (10 s after closing), from the daemon's /proc status;
- `state_bytes_per_token` (segment states resident after the open, over the document's tokens),
  `other_client_edit_ms_p50` and `_max` (the small document's edits, typed meanwhile).
With `--plot`, the times and the memory against document size.
"""

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from vqedit.daemon.client import DaemonClient
from vqedit.daemon.protocol import Results
from vqedit.engine.checkpoint import load_default
from vqedit.engine.document import Document
from vqedit.lab.bench.onnx_baseline import BUILD, Dense, OnnxError, export, unavailable
from vqedit.lab.corpus import bbc_articles
from vqedit.lab.machine import cpu
from vqedit.lab.private_daemon import (
    DAEMON_MODEL_OPTIONS,
    add_daemon_model_arguments,
    daemon_model_arguments,
    private_daemon_dirs,
)
from vqedit.main import CliError
from vqedit.text.edit import Edit

CLOSED_SETTLE_S = 10.0  # how long after closing the settled memory is read
SMALL = "The match ended with a late goal.\n\nFans stayed long after the whistle."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_daemon_model_arguments(parser)
    parser.add_argument("--words", default="2000,20000,100000",
                        help="document sizes in words, comma-separated")
    parser.add_argument("--timeout-s", type=float, default=900.0,
                        help="give a size up after this long without all its results")
    parser.add_argument("--onnx-cache", type=Path, default=BUILD,
                        help="where the exported ONNX baseline is kept (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the JSON lines here")
    parser.add_argument("--plot", type=Path, help="draw times and memory against size (PNG)")


def run(args: argparse.Namespace) -> int:
    try:
        sizes = [int(w) for w in args.words.split(",")]
    except ValueError:
        raise CliError(f"--words takes comma-separated word counts, got {args.words!r}") from None
    if not sizes or min(sizes) < 1:
        raise CliError(f"--words takes positive word counts, got {args.words!r}")
    reason = unavailable()
    if reason is not None:
        raise CliError(f"bench open measures against ONNX Runtime: {reason}")
    loaded = load_default()  # the tokenizer and the dense base, for the baseline
    try:
        exported = export(loaded.hf_model, loaded.name, loaded.model.config.max_positions,
                          args.onnx_cache)
    except OnnxError as e:
        raise CliError(str(e)) from None
    baseline = Dense(exported.int8, threads=1)
    daemon_args = [*daemon_model_arguments(args, DAEMON_MODEL_OPTIONS), "--threads", "1"]
    reports = []
    for words in sizes:
        text = document(words)
        segments = Document(loaded.tokenizer, text, loaded.model.config.max_positions)
        inputs = [np.array([segments.model_input(s)]) for s in segments.segments]
        report = {"bench": "open", "words": len(text.split()),
                  "tokens": sum(i.shape[1] for i in inputs), "segments": len(inputs),
                  **_open(text, daemon_args, args.timeout_s),
                  "baseline_ort_int8_s": round(sum(baseline.time_ms(i) for i in inputs) / 1000,
                                               3),
                  "threads": 1, **cpu()}
        if report["state_mb"] is not None:
            report["state_bytes_per_token"] = round(report["state_mb"] * 2**20
                                                    / report["tokens"])
        print(json.dumps(report), flush=True)
        reports.append(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(r) + "\n" for r in reports))
    if args.plot:
        _plot(reports, args.plot)
    return 0


def document(words: int) -> str:
    """BBC articles as one Markdown document of `words` words: each a heading and paragraphs."""
    paragraphs, count = [], 0
    for article in bbc_articles():
        title, _, body = article.text.partition("\n")
        for paragraph in [f"# {title.strip()}", *body.split("\n\n")]:
            kept = paragraph.split()[:words - count]
            if kept and kept != ["#"]:
                paragraphs.append(" ".join(kept))
                count += len(kept)
            if count == words:
                return "\n\n".join(paragraphs) + "\n"
    raise CliError(f"the BBC corpus has fewer than {words} words")


def _open(text: str, daemon_args: list[str], timeout: float) -> dict:
    """One document opened in a fresh daemon while another client types: the figures."""
    with private_daemon_dirs() as paths:
        first: list[float] = []  # when results for the big document first arrived

        def arrived(results: Results) -> None:
            if results.uri == "big" and not first:
                first.append(time.perf_counter())

        with DaemonClient(daemon_args=daemon_args, paths=paths, on_results=arrived) as client, \
                DaemonClient(daemon_args=daemon_args, paths=paths) as other:
            client.open("warm", "The model loads on this line.", 0)
            client.wait_for("warm", 0, timeout=timeout)
            pid = client.stats()["pid"]
            other.open("small", SMALL, 0)
            other.wait_for("small", 0, timeout=timeout)
            before = _rss_mb(pid)
            _reset_peak(pid)
            done = threading.Event()
            typed: list[float] = []
            typist = threading.Thread(target=_type, args=(other, done, typed, timeout))
            started = time.perf_counter()
            client.open("big", text, 0)
            typist.start()
            try:
                client.wait_for("big", 0, timeout=timeout)
                all_s = time.perf_counter() - started
            except TimeoutError:
                all_s = None
            done.set()
            typist.join()
            peak, opened = _rss_mb(pid, "VmHWM"), _rss_mb(pid)
            state_mb = client.stats()["state_mb"] if all_s is not None else None
            client.close("big")
            time.sleep(CLOSED_SETTLE_S)
            after = _rss_mb(pid)
            client.shutdown()
    return {"first_results_s": round(first[0] - started, 3) if first else None,
            "all_results_s": round(all_s, 3) if all_s is not None else None,
            "rss_mb_before": before, "rss_mb_peak": peak, "rss_mb_open": opened,
            "rss_mb_after_close": after, "state_mb": state_mb,
            "other_client_edits": len(typed),
            "other_client_edit_ms_p50": round(statistics.median(typed), 1) if typed else None,
            "other_client_edit_ms_max": round(max(typed), 1) if typed else None}


def _type(client: DaemonClient, done: threading.Event, latency: list[float],
          timeout: float) -> None:
    """One-character edits into the small document, each after the last one's results, until
    the big document has its results (the edit under way then finishes)."""
    version = 0
    while not done.is_set():
        version += 1
        started = time.perf_counter()
        client.change("small", version, [Edit(0, 0, "a")])
        client.wait_for("small", version, timeout=timeout)
        latency.append((time.perf_counter() - started) * 1000)
        done.wait(0.05)


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A field of the daemon's /proc status (its resident memory, or the peak of it), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise CliError(f"/proc/{pid}/status has no {field}")


def _reset_peak(pid: int) -> None:
    """Start the daemon's peak resident memory afresh (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _plot(reports: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    words = [r["words"] for r in reports]
    fig, (times, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("first_results_s", "first results"), ("all_results_s", "all results"),
                       ("baseline_ort_int8_s", "ONNX Runtime int8, every segment")):
        done = [r for r in reports if r[key] is not None]  # a size given up has no time
        times.plot([r["words"] for r in done], [r[key] for r in done], marker="o", label=label)
    times.set(xscale="log", yscale="log", xlabel="document words", ylabel="seconds",
              title="opening a document (one worker thread)")
    times.legend()
    for key, label in (("rss_mb_before", "before"), ("rss_mb_peak", "peak"),
                       ("rss_mb_open", "open"), ("rss_mb_after_close", "10 s after close")):
        memory.plot(words, [r[key] for r in reports], marker="o", label=label)
    memory.set(xscale="log", xlabel="document words", ylabel="daemon RSS (MB)",
               title="daemon memory")
    memory.legend()
    fig.suptitle(f"vqedit bench open, {reports[0]['cpu']}, AVX-512: {reports[0]['avx512']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
