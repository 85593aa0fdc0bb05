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
    vqedit lsp [--tcp HOST:PORT] [--in-process] [--log-file PATH]

Every failure a user can cause (a missing file, a binary file, empty text, an unknown model)
ends with a one-line message on stderr and exit status 2, never a traceback.
"""

import argparse
import importlib
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
    classify.set_defaults(module="classify")

    doctor = commands.add_parser("doctor", help="check the installation and the model import")
    doctor.add_argument("--model", help="the model to check (default: the default model)")
    doctor.add_argument("--json", action="store_true", help="print a JSON object")
    doctor.set_defaults(module="doctor")

    train = commands.add_parser("train", help="distill the VQ student, train label heads")
    trainers = train.add_subparsers(dest="trainer", required=True)
    _command(trainers, "distill", "train_distill", "a VQ student distilled from a dense base model")
    _command(trainers, "head", "train_head", "a linear label head on pooled embeddings")
    _command(commands, "eval", "evaluate",
             "a student against its teacher: accuracy, embeddings, code flips, engine figures")
    bench = commands.add_parser("bench", help="benchmarks that print JSON")
    benches = bench.add_subparsers(dest="bench", required=True)
    _command(benches, "engine", "bench_engine",
             "incremental edits against full passes, side by side")
    _command(benches, "daemon", "bench_daemon",
             "edit-to-result latency through a real daemon, alone and under load")
    _command(commands, "daemon", "daemon_command",
             "the per-user inference daemon: run, start, stop, status")
    _command(commands, "lsp", "lsp.server",
             "the language server (stdio; --tcp HOST:PORT; --in-process)")
    return parser


def _command(commands, name: str, module: str, summary: str) -> None:
    """A subcommand whose options and `run` live in the module `vqedit.<module>`."""
    parser = commands.add_parser(name, help=summary)
    importlib.import_module(f"vqedit.{module}").add_arguments(parser)
    parser.set_defaults(module=module)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from vqedit.engine.checkpoint import ModelLoadError

    try:
        return importlib.import_module(f"vqedit.{args.module}").run(args)
    except (CliError, ModelLoadError) as e:
        print(f"vqedit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
