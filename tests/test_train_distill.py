"""`vqedit train distill` as a user runs it: a tiny OPT base, a few steps, an exact resume."""

import json

import pytest
import safetensors.torch

from tests.test_cli import vqedit


def distill(opt_base, out, *args: str):
    run = vqedit("train", "distill", "--model", str(opt_base), "--out", str(out),
                 "--codebook-size", "8", "--tokens-per-step", "128", "--save-every", "2",
                 "--threads", "1", *args)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    return run


@pytest.mark.parametrize("groups", ["1", "2"])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(opt_base, tmp_path, groups):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    grouped = ("--codebook-groups", groups)
    report = json.loads(distill(opt_base, straight, "--steps", "4", *grouped)
                        .stdout.decode().splitlines()[-1])
    assert report["steps"] == 4 and report["bytes"] > 0
    distill(opt_base, resumed, "--steps", "4", "--stop-after", "2", *grouped)
    distill(opt_base, resumed, "--steps", "4", "--resume", *grouped)
    a = safetensors.torch.load_file(straight / "student.safetensors")
    b = safetensors.torch.load_file(resumed / "student.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    log = [json.loads(line) for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]


def test_a_finished_run_is_not_overwritten_and_bad_text_is_refused(opt_base, tmp_path):
    distill(opt_base, tmp_path / "run", "--steps", "1")
    again = vqedit("train", "distill", "--model", str(opt_base), "--out", str(tmp_path / "run"))
    assert again.returncode == 2 and b"already holds a run" in again.stderr
    binary = tmp_path / "notes.txt"
    binary.write_bytes(b"\xff\xfe\x00binary")
    bad = vqedit("train", "distill", "--model", str(opt_base), "--out", str(tmp_path / "other"),
                 "--text", str(binary))
    assert bad.returncode == 2 and b"not a UTF-8 text file" in bad.stderr


def test_groups_that_do_not_divide_a_head_are_refused(opt_base, tmp_path):
    bad = vqedit("train", "distill", "--model", str(opt_base), "--out", str(tmp_path / "run"),
                 "--codebook-groups", "3")
    assert bad.returncode == 2 and b"codebook_groups must divide the head width" in bad.stderr
    assert not (tmp_path / "run").exists()


def test_init_trains_a_student_further_fully_quantized_and_refuses_what_does_not_fit(opt_base,
                                                                                     tmp_path):
    first = tmp_path / "first" / "student.safetensors"
    grouped = ("--codebook-groups", "2")  # explicit: the refusal names the student's own layout
    distill(opt_base, first.parent, "--steps", "2", *grouped)
    distill(opt_base, tmp_path / "more", "--steps", "2", "--init", str(first), *grouped)
    log = [json.loads(line) for line in (tmp_path / "more" / "log.jsonl").read_text().splitlines()]
    assert [r["blend"] for r in log] == [1.0, 1.0]
    other = vqedit("train", "distill", "--model", str(opt_base), "--out", str(tmp_path / "other"),
                   "--init", str(first), "--codebook-size", "16")
    assert other.returncode == 2 and b"has 8 codewords in 2 groups" in other.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("not a student")
    wrong = vqedit("train", "distill", "--model", str(opt_base), "--out", str(tmp_path / "wrong"),
                   "--init", str(notes))
    assert wrong.returncode == 2 and b"is not a vqedit student" in wrong.stderr
