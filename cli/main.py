"""The `vqedit` command line: the only module that reaches into every layer.

Usage:
    vqedit classify FILE|- [--labels "sport,tech,..." | --head PATH] [--json]
    vqedit doctor [--json]
    vqedit train distill --out DIR [--steps N] [--resume]
    vqedit train head --bbc|--csv FILE --out PATH
    vqedit eval --json PATH [--student FILE] [--plot PNG --compare JSON...]
    vqedit bench engine [--tokens 512] [--edits 200] [--mode exact|sticky] [--json PATH] ...
    vqedit bench daemon [--tokens 512] [--clients 8] [--documents 10] [--json PATH]
    vqedit daemon run|start|stop|status [--student FILE] [--head FILE] [--idle-exit-s S] ...

Every failure a user can cause (a missing file, a binary file, empty text, an unknown model)
ends with a one-line message on stderr and exit status 2, never a traceback.
"""

import argparse
import sys
from pathlib import Path

from vqedit import __version__


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqedit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vqedit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    from vqedit.model_choice import add_model_arguments


    classify = commands.add_parser("classify", help="label a text (default: BBC topics)")
    classify.add_argument("file", help="a UTF-8 text file, or - for standard input")
    labels = classify.add_mutually_exclusive_group()
    labels.add_argument("--labels", help='comma-separated zero-shot label names, e.g. "sport,tech"')
    labels.add_argument("--head", type=Path, help="a head made by `vqedit train head`")
    add_model_arguments(classify)
    classify.add_argument("--json", action="store_true", help="print a JSON object")

    doctor = commands.add_parser("doctor", help="check the installation and the model import")
    doctor.add_argument("--model", help="the model to check (default: the default model)")
    doctor.add_argument("--json", action="store_true", help="print a JSON object")

    train = commands.add_parser("train", help="distill the VQ student, train label heads")
    trainers = train.add_subparsers(dest="trainer", required=True)
    from vqedit import train_distill, train_head

    train_distill.add_arguments(trainers.add_parser(
        "distill", help="a VQ student distilled from a dense base model"))
    train_head.add_arguments(trainers.add_parser(
        "head", help="a linear label head on pooled embeddings"))

    evaluate = commands.add_parser("eval", help="a student against its teacher: accuracy, "
                                                "embeddings, code flips, engine figures")
    from vqedit import evaluate as evaluation

    evaluation.add_arguments(evaluate)

    bench = commands.add_parser("bench", help="benchmarks that print JSON")
    benches = bench.add_subparsers(dest="bench", required=True)
    from vqedit import bench_engine

    bench_engine.add_arguments(benches.add_parser(
        "engine", help="incremental edits against full passes, side by side"))
    from vqedit import bench_daemon

    bench_daemon.add_arguments(benches.add_parser(
        "daemon", help="edit-to-result latency through a real daemon, alone and under load"))

    from vqedit import daemon_command

    daemon_command.add_arguments(commands.add_parser(
        "daemon", help="the per-user inference daemon: run, start, stop, status"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from vqedit.engine.checkpoint import ModelLoadError

    try:
        if args.command == "classify":
            from vqedit.classify import run
        elif args.command == "eval":
            from vqedit.evaluate import run
        elif args.command == "bench" and args.bench == "daemon":
            from vqedit.bench_daemon import run
        elif args.command == "bench":
            from vqedit.bench_engine import run
        elif args.command == "daemon":
            from vqedit.daemon_command import run
        elif args.command == "train" and args.trainer == "distill":
            from vqedit.train_distill import run
        elif args.command == "train":
            from vqedit.train_head import run
        else:
            from vqedit.doctor import run
        return run(args)
    except (CliError, ModelLoadError) as e:
        print(f"vqedit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
