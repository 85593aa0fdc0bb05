"""`vqedit bench engine` as a user runs it: a real process, real models, a JSON line and a plot."""

import importlib.util
import json

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tests.test_cli import vqedit
from tests.tiny import byte_level_bpe, tiny_bert, tiny_opt
from vqedit.engine.checkpoint import default_model_path

FIELDS = {"model", "tokens", "threads", "edits", "ops_ratio_median", "ops_ratio_p10",
          "ops_ratio_p90", "wall_ratio_median", "edit_ms_p50", "edit_ms_p99", "full_ms_p50",
          "dirty_tokens_per_layer", "exact_agreement", "cosine_vs_exact_median",
          "cosine_vs_exact_min", "mode", "delta", "state_bytes_per_token"}


SPEEDUPS = {"speedup_vs_torch_median", "speedup_vs_ort_fp32_median",
            "speedup_vs_ort_int8_median"}


def bench_lines(*args: str) -> list[dict]:
    run = vqedit("bench", "engine", "--edits", "6", "--edits-per-doc", "3", "--check-every", "2",
                 "--threads", "1", *args)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return [json.loads(line) for line in run.stdout.decode().strip().splitlines()]


def bench(*args: str) -> dict:
    return bench_lines(*args)[-1]


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


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                    reason="the ONNX Runtime baselines need the `bench` extra")
def test_a_list_of_lengths_gives_one_line_each_with_speedups_over_every_baseline(tmp_path):
    base = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(base)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(base)
    out, plot = tmp_path / "bench.json", tmp_path / "scaling.png"
    lines = bench_lines("--model", str(base), "--tokens", "32,48", "--mode", "exact",
                        "--onnx-cache", str(tmp_path / "onnx"), "--json", str(out),
                        "--plot", str(plot))
    assert [line["tokens"] for line in lines] == [32, 48]
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for line in lines:
        assert set(line) >= FIELDS | SPEEDUPS | {"ort_fp32_ms_p50", "ort_int8_ms_p50", "cpu",
                                                 "avx512"}
        assert all(line[field] > 0 for field in SPEEDUPS) and line["ort_int8_ms_p50"] > 0
        assert line["exact_agreement"] == 1.0 and isinstance(line["avx512"], bool)
        assert line["onnx_cache"].startswith(str(tmp_path / "onnx"))


def test_a_length_that_is_not_a_number_is_refused():
    run = vqedit("bench", "engine", "--tokens", "32,many")
    assert run.returncode == 2 and b"comma list of lengths" in run.stderr


def test_bursts_report_their_cost_against_recomputing(tmp_path):
    """`bench burst`: a scattered burst and a replace-all, each with its time and MACs against
    a full recompute of the result and the dense MACs of the segments it touched."""
    out = tmp_path / "burst.json"
    run = vqedit("bench", "burst", "--edits", "12", "--words", "400", "--json", str(out))
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    lines = [json.loads(line) for line in run.stdout.decode().strip().splitlines()]
    assert [line["burst"] for line in lines] == ["scattered", "replace_all"]
    for line in lines:
        assert line["burst_macs"] > 0 and line["dense_touched_macs"] > 0
        assert line["recompute_ms"] > 0 and "time_vs_recompute" in line
    assert lines[0]["edits"] == 12
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines


def test_a_burst_replacement_that_is_not_a_word_is_refused():
    run = vqedit("bench", "burst", "--replace", "the")
    assert run.returncode == 2 and b"--replace" in run.stderr


def test_open_bench_reports_times_memory_and_the_baseline_per_size(tmp_path):
    out, plot = tmp_path / "open.json", tmp_path / "open.png"
    run = vqedit("bench", "open", "--words", "150,300", "--json", str(out), "--plot", str(plot))
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    lines = [json.loads(line) for line in run.stdout.decode().strip().splitlines()]
    assert [json.loads(line) for line in out.read_text().splitlines()] == lines
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [line["words"] for line in lines] == [150, 300]
    for line in lines:
        assert 0 < line["first_results_s"] <= line["all_results_s"]
        assert line["baseline_ort_int8_s"] > 0 and line["tokens"] > line["words"]
        assert line["rss_mb_before"] <= line["rss_mb_peak"] and line["rss_mb_after_close"] > 0
        assert line["state_bytes_per_token"] > 0 and line["other_client_edits"] >= 1


def test_open_bench_refuses_sizes_it_cannot_read():
    run = vqedit("bench", "open", "--words", "many")
    assert run.returncode == 2 and b"comma-separated" in run.stderr
