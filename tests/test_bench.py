"""`vqedit bench engine` as a user runs it: a real process, real models, a JSON line and a plot."""

import json

import pytest
from transformers import PreTrainedTokenizerFast

from tests.test_cli import vqedit
from tests.tiny import byte_level_bpe, tiny_opt

FIELDS = {"model", "tokens", "threads", "edits", "ops_ratio_median", "ops_ratio_p10",
          "ops_ratio_p90", "wall_ratio_median", "edit_ms_p50", "edit_ms_p99", "full_ms_p50",
          "dirty_tokens_per_layer", "exact_agreement", "cosine_vs_exact_median",
          "cosine_vs_exact_min", "mode", "delta", "state_bytes_per_token"}


def bench(*args: str) -> dict:
    run = vqedit("bench", "engine", "--edits", "6", "--edits-per-doc", "3", "--check-every", "2",
                 "--threads", "1", *args)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return json.loads(run.stdout.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["exact", "sticky"])
def test_minilm_bench_reports_savings_and_verified_edits(tmp_path, mode):
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    report = bench("--tokens", "64", "--mode", mode, "--dense", "--json", str(out),
                   "--plot", str(plot))
    assert set(report) >= FIELDS
    assert json.loads(out.read_text()) == report
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report["edits"], report["checked"], report["mode"]) == (6, 3, mode)
    assert report["exact_agreement"] == 1.0
    assert report["ops_ratio_median"] > 1 and len(report["dirty_tokens_per_layer"]) == 6
    assert "k-means" in report["codebooks"]


def test_the_default_bench_measures_the_shipped_student():
    report = bench("--tokens", "64", "--mode", "exact")
    assert report["codebooks"] == "trained" and "student.safetensors" in report["model"]
    assert report["exact_agreement"] == 1.0


def test_causal_models_are_also_measured_against_prefix_reuse(tmp_path):
    tiny_opt().save_pretrained(tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(), bos_token="</s>",
                            eos_token="</s>", pad_token="<pad>").save_pretrained(tmp_path)
    report = bench("--model", str(tmp_path), "--tokens", "48", "--mode", "exact")
    assert report["family"] == "opt" and report["exact_agreement"] == 1.0
    assert report["prefix_ops_ratio_median"] > 1


def test_a_segment_longer_than_the_window_is_refused():
    run = vqedit("bench", "engine", "--tokens", "1000")
    assert run.returncode == 2
    assert b"exceeds the model's window of 512" in run.stderr
