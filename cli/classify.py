"""`vqedit classify FILE|-`: the label of a whole text.

By default the shipped BBC topic head (business, entertainment, politics, sport, tech) labels
the shipped student's embedding. `--head PATH` uses a head made by `vqedit train head`;
`--labels` names zero-shot labels, where the label whose embedding is most similar to the
document's pooled embedding wins.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from vqedit.engine.checkpoint import LoadedModel
from vqedit.engine.document import Document
from vqedit.engine.heads import DEFAULT_HEAD, LinearHead, ZeroShotHead, pooled, segment_states
from vqedit.main import CliError
from vqedit.model_choice import add_model_arguments, load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a UTF-8 text file, or - for standard input")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--labels", help='comma-separated zero-shot label names, e.g. "sport,tech"')
    labels.add_argument("--head", type=Path, help="a head made by `vqedit train head`")
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object")


def read_text(name: str) -> str:
    """The text of a file (or stdin for "-"), refusing what is not UTF-8 text."""
    if name == "-":
        data = sys.stdin.buffer.read()
    else:
        path = Path(name)
        if not path.exists():
            raise CliError(f"no such file: {name}")
        if not path.is_file():
            raise CliError(f"not a regular file: {name}")
        data = path.read_bytes()
    binary = CliError(f"{name} is not a UTF-8 text file (binary data?)")
    if b"\0" in data:
        raise binary
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise binary from None
    if not text.strip():
        raise CliError(f"nothing to classify: {name} is empty")
    return text


def parse_labels(spec: str) -> list[str]:
    labels = [label.strip() for label in spec.split(",")]
    if len(labels) < 2 or not all(labels):
        raise CliError(f"--labels needs at least two non-empty names, got {spec!r}")
    if len(set(labels)) != len(labels):
        raise CliError(f"--labels has duplicates: {spec!r}")
    return labels


def embed(loaded: LoadedModel, text: str) -> torch.Tensor:
    doc = Document(loaded.tokenizer, text, loaded.model.config.max_positions)
    if not doc.segments:
        raise CliError("nothing to classify: the text has no tokens")
    return pooled(segment_states(loaded.model, doc))


def run(args: argparse.Namespace) -> int:
    custom_model = args.model is not None or args.student is not None or args.dense
    if args.labels is None and args.head is None and custom_model:
        raise CliError("the shipped head belongs to the shipped student: with --model, "
                       "--student or --dense give --head PATH or --labels")
    text = read_text(args.file)
    if args.labels is None:
        try:
            head: LinearHead | ZeroShotHead = LinearHead.load(args.head or DEFAULT_HEAD)
        except ValueError as e:
            raise CliError(str(e)) from None
        loaded = load_model(args)
    else:
        labels = parse_labels(args.labels)
        loaded = load_model(args)
        head = ZeroShotHead(labels, torch.stack([embed(loaded, label) for label in labels]))
    result = head.classify(embed(loaded, text))
    if args.json:
        print(json.dumps({"label": result.label, "scores": result.scores,
                          "model": loaded.source,
                          "student": str(loaded.student) if loaded.student else None,
                          "head": "zero-shot" if args.labels else str(args.head or DEFAULT_HEAD)}))
    else:
        print(f"{result.label}\t{result.scores[result.label]:.3f}")
    return 0
