"""`vqedit train head` and `classify --head`: labels learnt from examples, by the real process."""

import json

import pytest
import torch

from tests.test_cli import vqedit
from vqedit.engine.heads import LinearHead
from vqedit.lab.corpus import bbc_articles, is_test

SPORT = ["The striker scored twice in the second half.", "The keeper saved a late penalty.",
         "United won the cup final on Saturday.", "The coach praised his defenders.",
         "She won the marathon in record time.", "The match ended in a goalless draw."]
COOKING = ["Whisk the eggs with sugar until pale.", "Bake the bread for forty minutes.",
           "Simmer the sauce and add fresh basil.", "Chop the onions and fry them gently.",
           "Season the soup with salt and pepper.", "Knead the dough until it is smooth."]


def write_csv(path, rows) -> None:
    path.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in rows))


def test_a_head_trained_on_a_csv_labels_new_text(tmp_path):
    examples, head = tmp_path / "examples.csv", tmp_path / "head.safetensors"
    write_csv(examples, [(t, "sport") for t in SPORT] + [(t, "cooking") for t in COOKING])
    run = vqedit("train", "head", "--csv", str(examples), "--out", str(head))
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    report = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert report["labels"] == ["cooking", "sport"] and report["train_accuracy"] == 1.0
    text = tmp_path / "new.txt"
    text.write_text("The goalkeeper was sent off and the team lost the game.")
    run = vqedit("classify", str(text), "--head", str(head), "--json")
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert json.loads(run.stdout)["label"] == "sport"


def test_the_bbc_head_reports_accuracy_on_the_test_split(tmp_path):
    head = tmp_path / "bbc.safetensors"
    run = vqedit("train", "head", "--bbc", "--limit", "40", "--out", str(head))
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    report = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert (report["examples"], report["test_examples"]) == (40, 40)
    assert report["test_accuracy"] >= 0.6
    assert LinearHead.load(head).labels == ["business", "entertainment", "politics", "sport",
                                            "tech"]


def test_a_head_from_label_descriptions_needs_no_examples(tmp_path):
    head, text = tmp_path / "described.safetensors", tmp_path / "new.txt"
    run = vqedit("train", "head", "--out", str(head), "--describe", "sport=Sport: matches, goals",
                 "--describe", "cooking=Cooking: recipes, baking and food")
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    text.write_text("Preheat the oven and bake the cake for half an hour.")
    run = vqedit("classify", str(text), "--head", str(head), "--json")
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert json.loads(run.stdout)["label"] == "cooking"


@pytest.mark.parametrize("spec,message", [
    (["sport"], "LABEL=DESCRIPTION"), (["a=x", "a=y"], "twice"), (["a=x"], "at least two")])
def test_bad_descriptions_are_refused(tmp_path, spec, message):
    args = [a for s in spec for a in ("--describe", s)]
    run = vqedit("train", "head", "--out", str(tmp_path / "h"), *args)
    assert run.returncode == 2 and message in run.stderr.decode()


@pytest.mark.parametrize("content,message", [
    ("words,label\nhello,a\n", "missing text"),
    ("text,label\nhello,a\n,b\n", ":3: empty text or label"),
    ("text,label\nhello,a\nworld,a\n", "at least two labels"),
])
def test_bad_csv_files_are_refused_with_the_reason(tmp_path, content, message):
    examples = tmp_path / "examples.csv"
    examples.write_text(content)
    run = vqedit("train", "head", "--csv", str(examples), "--out", str(tmp_path / "h"))
    assert run.returncode == 2 and message in run.stderr.decode()
    assert not (tmp_path / "h").exists()


def test_a_file_that_is_not_a_head_is_refused(tmp_path):
    text, bogus = tmp_path / "a.txt", tmp_path / "bogus.safetensors"
    text.write_text("Some text.")
    bogus.write_bytes(b"not a head")
    run = vqedit("classify", str(text), "--head", str(bogus))
    assert run.returncode == 2 and b"is not a vqedit head" in run.stderr


def test_the_test_split_is_a_stable_fifth_of_every_label():
    articles = bbc_articles()
    test = [a for a in articles if is_test(a)]
    assert 0.17 < len(test) / len(articles) < 0.23
    assert {a.label for a in test} == {a.label for a in articles}
    assert [a.id for a in test] == [a.id for a in reversed(articles) if is_test(a)][::-1]


def test_linear_heads_need_two_labels_and_matching_shapes():
    with pytest.raises(ValueError, match="at least two labels"):
        LinearHead.fit(torch.randn(3, 4), ["a", "a", "a"])
    with pytest.raises(ValueError, match="2 labels but weights"):
        LinearHead(["a", "b"], torch.randn(3, 4), torch.randn(3))
