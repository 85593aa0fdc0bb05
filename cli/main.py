"""The `vqedit` command line: the only module that reaches into every layer.

Usage:
    vqedit classify FILE|- [--labels "sport,tech,..." | --head PATH] [--json]
    vqedit doctor [--json]
    vqedit train distill --out DIR [--steps N] [--resume]
    vqedit train head --bbc|--csv FILE --out PATH
    vqedit eval --json PATH [--student FILE] [--plot PNG --compare JSON...]
    vqedit bench engine [--tokens 512] [--edits 200] [--mode exact|sticky] [--json PATH] ...
    vqedit bench daemon [--tokens 512] [--clients 8] [--documents 10] [--json PATH]
    vqedit bench burst [--paragraphs 6] [--edits 100] [--words 20000] [--json PATH]
    vqedit bench lsp [--words 2000] [--edits 200] [--debounce-ms 100] [--json PATH]
    vqedit bench open [--words 2000,20000,100000] [--json PATH] [--plot PNG]
    vqedit edits synth --out LOG [--edits 1000] [--articles 1 | --text FILE]
    vqedit edits from-git FILE --out LOG
    vqedit replay LOG [--via engine|daemon|lsp] [--verify N] [--json PATH] [--plot PATH] ...
    vqedit daemon run|start|stop|status [--student FILE] [--head FILE] [--idle-exit-s S] ...
    vqedit lsp [--tcp HOST:PORT] [--in-process] [--log-file PATH]

Every failure a user can cause (a missing file, a binary file, empty text, an unknown model)
ends with a one-line message on stderr and exit status 2, never a traceback.
"""

import argparse
import importlib
import sys

from vqedit import __version__

# Every command: its words on the command line, the module under `vqedit` that holds its
# `add_arguments` and `run` (the product's in cli/, the lab's training, benchmarks, edit logs
# and replay under `lab.`), and its summary; in the order `--help` lists them. A module is
# imported only when its command runs, so `vqedit lsp` starts without loading torch.
COMMANDS = (
    (("classify",), "classify", "label a text (default: BBC topics)"),
    (("doctor",), "doctor", "check the installation and the model import"),
    (("train", "distill"), "lab.train.distill_command",
     "a VQ student distilled from a dense base model"),
    (("train", "head"), "lab.train.head_command", "a linear label head on pooled embeddings"),
    (("eval",), "lab.train.eval_command",
     "a student against its teacher: accuracy, embeddings, code flips, engine figures"),
    (("bench", "engine"), "lab.bench.engine",
     "incremental edits against full passes, side by side"),
    (("bench", "daemon"), "lab.bench.daemon",
     "edit-to-result latency through a real daemon, alone and under load"),
    (("bench", "burst"), "lab.bench.burst",
     "many changes in one didChange against recomputing what they touched"),
    (("bench", "lsp"), "lab.bench.lsp",
     "change-to-diagnostics latency of `vqedit lsp` over stdio, typed into"),
    (("bench", "open"), "lab.bench.open",
     "opening big documents through a real daemon: time to results, memory, fairness"),
    (("bench", "chaos"), "lab.bench.chaos",
     "malformed input and kill -9 against a real daemon: crashes, hangs, lost edits"),
    (("edits", "synth"), "lab.edits.synth", "atomic edits typed into BBC articles or files"),
    (("edits", "from-git"), "lab.edits.from_git", "a file's git history as atomic edits"),
    (("replay",), "lab.replay.replay_command",
     "run an edit log through the engine, a daemon or the language server"),
    (("daemon",), "daemon_command", "the per-user inference daemon: run, start, stop, status"),
    (("lsp",), "lsp_command", "the language server (stdio; --tcp HOST:PORT; --in-process)"),
)
GROUPS = {  # commands of two words: the first word's summary
    "train": "distill the VQ student, train label heads",
    "bench": "benchmarks that print JSON",
    "edits": "make edit logs (docs/edit-log.md)",
}


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    """The parser, with the options of only the command `argv` names (a command's module may
    import torch; the others are not loaded)."""
    words = tuple(a for a in argv if not a.startswith("-"))  # the command's words come first
    parser = argparse.ArgumentParser(prog="vqedit", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vqedit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    groups = {}  # the first word of a two-word command → its subcommands
    for path, module, summary in COMMANDS:
        where = commands
        if len(path) == 2:
            if path[0] not in groups:
                group = commands.add_parser(path[0], help=GROUPS[path[0]])
                groups[path[0]] = group.add_subparsers(dest=f"{path[0]}_command", required=True)
            where = groups[path[0]]
        command = where.add_parser(path[-1], help=summary)
        command.set_defaults(module=module)
        if words[:len(path)] == path:
            importlib.import_module(f"vqedit.{module}").add_arguments(command)
    return parser


def _user_error(error: Exception) -> bool:
    """A failure to print as one line: ours, or a model that would not load."""
    # The checkpoint module is only imported by commands that load a model (and so can fail to).
    checkpoint = sys.modules.get("vqedit.engine.checkpoint")
    return isinstance(error, CliError) or (checkpoint is not None
                                           and isinstance(error, checkpoint.ModelLoadError))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    try:
        return importlib.import_module(f"vqedit.{args.module}").run(args)
    except Exception as e:
        if not _user_error(e):
            raise
        print(f"vqedit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
