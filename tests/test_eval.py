"""`vqedit eval` as a user runs it, on a tiny BERT student: every figure the issue names."""

import json

from transformers import AutoTokenizer

from tests.test_cli import vqedit
from tests.tiny import tiny_bert
from vqedit.engine.checkpoint import default_model_path
from vqedit.engine.heads import LinearHead

MODE_FIELDS = {"ops_ratio_median", "wall_ratio_median", "exact_agreement", "cosine_vs_exact_min",
               "label_agreement"}


def test_eval_reports_accuracy_embeddings_flips_and_both_modes(tmp_path):
    base = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(base)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(base)
    trained = vqedit("train", "distill", "--model", str(base), "--out", str(tmp_path / "run"),
                     "--steps", "2", "--codebook-size", "8", "--tokens-per-step", "128")
    assert trained.returncode == 0, trained.stderr.decode()[-2000:]
    student = tmp_path / "run" / "student.safetensors"
    out, plot, head = tmp_path / "eval.json", tmp_path / "tradeoff.png", tmp_path / "head"
    run = vqedit("eval", "--model", str(base), "--student", str(student), "--json", str(out),
                 "--tokens", "48", "--edits", "4", "--edits-per-doc", "2", "--check-every", "2",
                 "--limit", "10", "--threads", "1", "--plot", str(plot), "--head-out", str(head))
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    report = json.loads(out.read_text())
    assert report == json.loads(run.stdout.decode().splitlines()[-1])
    assert {"teacher_accuracy", "student_accuracy", "embedding_cosine_median",
            "embedding_cosine_p10"} <= set(report)
    assert (report["train_articles"], report["test_articles"], report["codebook_size"]) == (
        10, 10, 8)
    assert len(report["flips_per_layer"]) == 2 and report["training"]["steps"] == 2
    # A token with a flip has at least one flipped code (47 tokens besides the replaced one).
    for tokens, codes in zip(report["flips_per_layer"], report["flipped_groups_per_token"],
                             strict=True):
        assert codes >= tokens / 47 - 1e-3
    assert all(0 <= share <= 1 for share in report["groups_below_margin"])
    assert len(report["groups_below_margin"]) == 2 and report["margin_ratio"] == 2.0
    for mode in ("exact", "sticky"):
        assert set(report[mode]) >= MODE_FIELDS and report[mode]["edits"] == 4
    assert report["exact"]["exact_agreement"] == 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = tmp_path / "again.png"
    replot = vqedit("eval", "--plot-only", "--plot", str(again), "--compare", str(out), str(out))
    assert replot.returncode == 0 and again.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert LinearHead.load(head).labels == ["business", "entertainment", "politics", "sport",
                                            "tech"]


def test_eval_needs_a_student():
    run = vqedit("eval", "--dense", "--json", "/dev/null")
    assert run.returncode == 2 and b"--dense leaves nothing to measure" in run.stderr
