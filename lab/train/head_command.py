"""`vqedit train head`: a linear label head on pooled embeddings, from a CSV or the BBC corpus.

Usage:
    vqedit train head --bbc --out bbc-topics.safetensors
    vqedit train head --csv examples.csv --out my-labels.safetensors
    vqedit train head --describe "sport=Sports news" --describe "tech=Technology news" --out h

With `--bbc` the head learns from the corpus's training split and reports its accuracy on the
fixed test split (`lab/corpus.py: is_test`). A CSV needs a header naming the columns `text`
and `label`. `--describe LABEL=DESCRIPTION` (once per label) needs no examples: each label's
weights are its description's embedding, so the head ranks labels as zero-shot labels do. The
head is used with `vqedit classify FILE --head PATH`.
"""

import argparse
import csv
import json
from pathlib import Path

import torch
from tqdm import tqdm

from vqedit.classify import embed
from vqedit.engine.checkpoint import LoadedModel, load
from vqedit.engine.heads import LinearHead
from vqedit.lab.corpus import bbc_articles, is_test
from vqedit.main import CliError

Example = tuple[str, str]  # (text, label)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", type=Path, help="a CSV file with the columns text,label")
    source.add_argument("--bbc", action="store_true", help="the BBC News training split")
    source.add_argument("--describe", action="append", metavar="LABEL=DESCRIPTION",
                        help="a zero-shot label and its description (repeat per label)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the head")
    parser.add_argument("--model", help="local model directory (default: all-MiniLM-L6-v2)")
    parser.add_argument("--limit", type=int, help="use at most this many examples of each split")


def read_examples(path: Path) -> list[Example]:
    """(text, label) rows of a CSV with a `text,label` header; refuses empty cells by line."""
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"text", "label"} - set(reader.fieldnames or [])
            if missing:
                raise CliError(f"{path}: the header must name the columns text and label; "
                               f"missing {', '.join(sorted(missing))}")
            examples = []
            for row in reader:
                text, label = (row.get("text") or "").strip(), (row.get("label") or "").strip()
                if not text or not label:
                    raise CliError(f"{path}:{reader.line_num}: empty text or label")
                examples.append((text, label))
    except (UnicodeDecodeError, csv.Error) as e:
        raise CliError(f"{path} is not a UTF-8 CSV file: {e}") from None
    if len({label for _, label in examples}) < 2:
        raise CliError(f"{path}: a head needs examples of at least two labels")
    return examples


def parse_descriptions(specs: list[str]) -> dict[str, str]:
    descriptions = {}
    for spec in specs:
        label, _, description = (part.strip() for part in spec.partition("="))
        if not label or not description:
            raise CliError(f"--describe needs LABEL=DESCRIPTION, got {spec!r}")
        if label in descriptions:
            raise CliError(f"--describe names {label!r} twice")
        descriptions[label] = description
    if len(descriptions) < 2:
        raise CliError("a head needs at least two labels: repeat --describe")
    return descriptions


def _subset(examples: list[Example], limit: int | None) -> list[Example]:
    """At most `limit` examples, spread evenly over the list."""
    if limit is None or limit >= len(examples):
        return examples
    return [examples[i * len(examples) // limit] for i in range(limit)]


def _embed_all(loaded: LoadedModel, examples: list[Example], what: str) -> torch.Tensor:
    return torch.stack([embed(loaded, text) for text, _ in tqdm(examples, desc=what)])  # (M, D)


def _accuracy(head: LinearHead, embeddings: torch.Tensor, examples: list[Example]) -> float:
    hits = sum(head.classify(e).label == label
               for e, (_, label) in zip(embeddings, examples, strict=True))
    return round(hits / len(examples), 4)


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 2:
        raise CliError(f"--limit must be at least 2, got {args.limit}")
    if args.describe:
        return _describe(args)
    if args.bbc:
        articles = bbc_articles()
        train = [(a.text, a.label) for a in articles if not is_test(a)]
        test = [(a.text, a.label) for a in articles if is_test(a)]
    else:
        train, test = read_examples(args.csv), []
    train, test = _subset(train, args.limit), _subset(test, args.limit)
    loaded = load(args.model)
    embeddings = _embed_all(loaded, train, "embedding training examples")
    head = LinearHead.fit(embeddings, [label for _, label in train])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    head.save(args.out)
    report = {"head": str(args.out), "labels": head.labels, "examples": len(train),
              "train_accuracy": _accuracy(head, embeddings, train)}
    if test:
        report["test_examples"] = len(test)
        report["test_accuracy"] = _accuracy(head, _embed_all(loaded, test, "embedding tests"),
                                            test)
    print(json.dumps(report))
    return 0


def _describe(args: argparse.Namespace) -> int:
    descriptions = parse_descriptions(args.describe)
    loaded = load(args.model)
    prototypes = torch.stack([embed(loaded, d) for d in descriptions.values()])  # (N, D)
    head = LinearHead.from_prototypes(list(descriptions), prototypes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    head.save(args.out)
    print(json.dumps({"head": str(args.out), "labels": head.labels, "examples": 0}))
    return 0
