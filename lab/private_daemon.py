"""A daemon of one command's own: private XDG directories, and the daemon stopped at the end.

Benchmarks and replays must neither disturb nor be disturbed by the user's daemon. Setting the
XDG variables of this process (and so of every process it starts: a daemon, `vqedit lsp`) to
fresh directories gives them their own socket, pid file, log and (absent) config.
"""

import argparse
import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vqedit.daemon.lifecycle import argument, running_pid, wait_for_exit
from vqedit.daemon.paths import Paths

XDG = ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "XDG_CONFIG_HOME")
DAEMON_MODEL_OPTIONS = ("model", "student", "head")


def add_daemon_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options of a benchmark's own daemon (`daemon_model_arguments` passes them)."""
    parser.add_argument("--model", help="base model directory (needs --student)")
    parser.add_argument("--student", type=Path, help="student file (default: the shipped one)")
    parser.add_argument("--head", type=Path, help="head file (default: the shipped BBC head)")


def daemon_model_arguments(args: argparse.Namespace,
                           names: tuple[str, ...] = DAEMON_MODEL_OPTIONS) -> list[str]:
    """The options among `names` that were given, as `daemon run` arguments."""
    return [part for name in names if getattr(args, name) is not None
            for part in (f"--{name}", argument(getattr(args, name)))]


@contextlib.contextmanager
def private_daemon_dirs() -> Iterator[Paths]:
    """Yield the private paths; on exit stop any daemon started there and restore the variables.

    The directory name is short because a Unix socket's path must fit in 108 bytes.
    """
    saved = {name: os.environ.get(name) for name in XDG}
    with tempfile.TemporaryDirectory(prefix="vqr") as root:
        for name in XDG:
            os.makedirs(f"{root}/{name}")
            os.environ[name] = f"{root}/{name}"
        paths = Paths.default()
        try:
            yield paths
        finally:
            pid = running_pid(paths)
            if pid and pid > 0:
                os.kill(pid, signal.SIGTERM)
                wait_for_exit(paths, 30)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
