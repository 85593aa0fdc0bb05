"""`vqedit replay` as a user runs it: a real process, a tiny student, a real daemon.

A synthesised log replayed through the engine or a private daemon must verify against full
recomputation at every check, report what the issue asks for, and leave no daemon behind.
"""

import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.daemon_harness import PROSE, Expected, make_tiny_model, private_dirs
from vqedit.daemon.client import DaemonClient
from vqedit.lab.edits.synth import synthesize, write
from vqedit.lab.replay.driver import LspDriver
from vqedit.lsp import editlog
from vqedit.text.edit import Edit

EDITS = 40
ORT = importlib.util.find_spec("onnxruntime") is not None  # the `bench` extra


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("log") / "synth.jsonl"
    write(synthesize(PROSE + "\n", EDITS, seed=1, uri="file:///p.md", encoding="utf-16"), path)
    return path


def replay(tiny, log, tmp_path, *options: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "replay.json"
    run = subprocess.run([sys.executable, "-m", "vqedit", "replay", str(log), "--json", str(out),
                          "--model", str(tiny.base), "--student", str(tiny.student),
                          "--head", str(tiny.head), "--threads", "1",
                          "--onnx-cache", str(tiny.base.parent / "onnx"), *options],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run, json.loads(out.read_text())


@pytest.mark.parametrize("delta", ["0", "1.0"])
def test_engine_replay_verifies_at_every_check_and_reports_the_issues_fields(tiny, log,
                                                                            tmp_path, delta):
    _, result = replay(tiny, log, tmp_path, "--via", "engine", "--verify", "5", "--delta", delta,
                       "--csv", str(tmp_path / "rows.csv"), "--plot", str(tmp_path / "r.png"))
    assert result["edits"] == EDITS and result["verified"] == EDITS // 5
    assert result["verify_failures"] == 0
    assert result["latency_ms_p50"] > 0 and result["latency_ms_p99"] >= result["latency_ms_p50"]
    assert result["ops_ratio_median"] > 1  # fewer operations than a paragraph cache
    assert result["document_ops_ratio_median"] > result["ops_ratio_median"]
    assert 0 < result["touched_tokens_median"] < result["tokens_median"]
    if ORT:
        assert result["paragraph_cache_baseline"].startswith("costed")
        assert result["paragraph_cache_ms_p50"] > 0
        assert set(result["paragraph_cache_ms_by_tokens"]) == {"8", "16", "32", "64"}
    else:
        assert "not costed" in result["paragraph_cache_baseline"]
    assert len(result["dirty_tokens_per_layer"]) == 2  # the tiny model's layers
    final_text = editlog.read(log).steps[-1].text
    label, _, paragraphs = Expected(tiny)(final_text)
    final = result["final"]["file:///p.md"]
    assert final["version"] == EDITS
    if delta == "0":
        assert final["label"] == label and [p["label"] for p in final["paragraphs"]] == paragraphs
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == EDITS + 1
    assert (tmp_path / "r.png").stat().st_size > 0


def test_daemon_replay_verifies_against_a_fresh_pass_and_stops_its_daemon(tiny, log, tmp_path):
    _, result = replay(tiny, log, tmp_path, "--via", "daemon", "--verify", "20")
    assert result["edits"] == EDITS and result["verified"] == 2
    assert result["verify_failures"] == 0
    assert result["ops_ratio_median"] > 1 and "daemon's results" in result["savings_measured_by"]
    with pytest.raises(ProcessLookupError):
        os.kill(result["daemon_pid"], 0)  # the private daemon is gone


def test_a_bad_log_stops_the_replay_with_its_line_or_is_skipped_with_skip_bad(tiny, log,
                                                                              tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = log.read_text().splitlines()
    lines.insert(4, lines[2])  # version 2 again, after version 3
    bad.write_text("\n".join(lines) + "\n")
    run = subprocess.run([sys.executable, "-m", "vqedit", "replay", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "line 5: version 2 of file:///p.md goes backwards" in run.stderr
    _, result = replay(tiny, bad, tmp_path, "--skip-bad", "--quiet")
    assert result["bad_records"] == 1 and result["edits"] == EDITS


def cost_columns(path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(path.open()))
    return [{k: row[k] for k in ("macs", "dense_macs", "baseline_macs", "touched_tokens",
                                 "tokens", "dirty_per_layer")}
            for row in rows]


def test_a_daemon_replay_counts_each_edits_operations_in_its_own_run_as_the_engine_does(
        tiny, log, tmp_path):
    """The daemon's results carry the engine's counts: the same edits cost the same MACs,
    dirty the same tokens per layer, and are compared with the same dense baselines (the
    document's, and the segments a paragraph cache recomputes)."""
    replay(tiny, log, tmp_path, "--via", "engine", "--csv", str(tmp_path / "engine.csv"))
    _, result = replay(tiny, log, tmp_path, "--via", "daemon", "--csv",
                       str(tmp_path / "daemon.csv"))
    daemon = cost_columns(tmp_path / "daemon.csv")
    assert daemon == cost_columns(tmp_path / "engine.csv")
    assert sum(bool(row["dirty_per_layer"]) for row in daemon) > EDITS // 2
    assert result["ops_ratio_median"] > 1 and len(result["dirty_tokens_per_layer"]) == 2


def test_lsp_replay_drives_the_real_server_over_stdio_and_verifies(tiny, log, tmp_path):
    _, result = replay(tiny, log, tmp_path, "--via", "lsp", "--verify", "20",
                       "--csv", str(tmp_path / "lsp.csv"))
    assert result["edits"] == EDITS and result["verified"] == 2
    assert result["verify_failures"] == 0
    # Operation counts reach the replay through the server's vqedit/status.
    assert all(row["macs"] and row["dense_macs"] for row in cost_columns(tmp_path / "lsp.csv"))
    assert result["ops_ratio_median"] > 1 and len(result["dirty_tokens_per_layer"]) == 2
    assert result["position_encoding"] == "utf-16"
    assert result["final"]["file:///p.md"]["version"] == EDITS
    with pytest.raises(ProcessLookupError):
        os.kill(result["daemon_pid"], 0)


def test_the_servers_edit_log_replays_to_the_text_the_client_typed(tiny, tmp_path):
    """editLog: what the server records is a valid log that reaches the client's text, in the
    negotiated encoding (an emoji counts two UTF-16 units), including a change it repaired."""
    recorded = tmp_path / "recorded.jsonl"
    with private_dirs() as paths, DaemonClient(daemon_args=tiny.daemon_args(), paths=paths), \
            LspDriver({"debounceMs": 0, "editLog": str(recorded)}, timeout=120) as lsp:
        uri, text = "file:///r.md", "Goal 😀 scored.\n\nThe end.\n"
        lsp.open(uri, text, 1)
        typed = [Edit(7, 7, "late "), Edit(0, 4, "A goal"), Edit(len(text), len(text),
                                                                              "More.")]
        for version, edit in enumerate(typed, start=2):
            lsp.change(uri, version, lsp.content_changes(text, (edit,)))
            text = edit.applied(text)
        past_the_end = editlog.Content("!", editlog.Range.at(99, 0))  # the server clamps it
        lsp.change(uri, 5, [past_the_end])
        lsp.wait_published(uri, 5)
        server_text = lsp.command("vqedit.text", uri)["text"]
        lsp.close(uri)
        lsp.wait_published(uri, 5)
    loaded = editlog.read(recorded)
    kinds = [type(s.record).__name__ for s in loaded.steps]
    assert kinds == ["Open", "Change", "Change", "Change", "Change", "Close"]
    assert loaded.steps[3].text == text and loaded.steps[4].text == server_text


def test_bench_lsp_reports_change_to_diagnostics_latency_and_no_stale_publishes(tiny, tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "vqedit", "bench", "lsp", "--words", "80",
                          "--edits", "15", "--interval-ms", "30", "--debounce-ms", "20",
                          "--model", str(tiny.base), "--student", str(tiny.student),
                          "--head", str(tiny.head), "--threads", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["stale_publishes"] == 0
    assert result["published_versions"] >= 1 and result["computed_versions"] >= 1  # the last
    assert result["change_to_diagnostics_ms_p99"] >= result["change_to_diagnostics_ms_p50"]
    assert result["change_to_any_diagnostics_ms_p99"] >= result["change_to_any_diagnostics_ms_p50"]
    assert result["words"] >= 80 and result["tokens"] > result["words"] / 2
    assert result["model"].startswith("tiny-bert")


def test_the_driver_says_at_once_when_the_server_exits():
    driver = LspDriver(command=[sys.executable, "-c", "raise SystemExit(3)"], timeout=60)
    with pytest.raises(RuntimeError, match="exit"):
        driver.start()
    assert driver.returncode == 3
    driver.stop()
