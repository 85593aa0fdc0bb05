"""`vqedit daemon run|start|stop|status`: the per-user inference daemon by hand.

Usage:
    vqedit daemon run [--student FILE] [--head FILE] [--delta 8.0] [--idle-exit-s 1800] ...
    vqedit daemon start [same options]   # in the background; prints its pid
    vqedit daemon stop
    vqedit daemon status [--json]        # exit status 3 when none is running

Clients start the daemon themselves when they need one; these commands are for debugging and
for an always-on daemon (docs/daemon.md has a systemd user unit).
"""

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from vqedit.daemon.lifecycle import SpawnError, argument, running_pid, wait_for_exit
from vqedit.daemon.paths import Paths, UnsafeDirectoryError
from vqedit.daemon.settings import SettingsError
from vqedit.engine.mode import STICKY_DELTA
from vqedit.main import CliError

NOT_RUNNING = 3  # status's exit status when no daemon runs (as `systemctl status` does)
# Options that become settings (daemon/settings.py), by their settings name.
SETTING_OPTIONS = ("model", "student", "head", "device", "delta", "sweep", "memory_mb",
                   "idle_unload_s", "idle_exit_s", "compact_after_s", "threads", "tcp_port")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    for name, help in (("run", "serve in the foreground"), ("start", "serve in the background")):
        _add_run_options(actions.add_parser(name, help=help))
    actions.add_parser("stop", help="stop the running daemon")
    status = actions.add_parser("status", help="is one running, and what it holds")
    status.add_argument("--json", action="store_true", help="print the stats as JSON")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    # Unset options stay None, so that the config file can set them (settings.resolve).
    p.add_argument("--model", help="a local base model directory (default: all-MiniLM-L6-v2); "
                                   "needs --student")
    p.add_argument("--student", type=Path, help="a student made by `vqedit train distill` "
                                                "(default: the shipped student)")
    p.add_argument("--head", type=Path, help="a label head (default: the shipped BBC topics)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="where the model runs (default auto: the GPU when there is one)")
    p.add_argument("--delta", type=float,
                   help=f"sticky-mode hysteresis δ; 0 is exact (default {STICKY_DELTA:g})")
    p.add_argument("--sweep", type=int, help="sticky refresh: tokens re-quantized per layer and "
                                             "edit (default 2)")
    p.add_argument("--memory-mb", type=float, help="memory budget of segment states; least "
                                                   "recently used documents are dropped beyond "
                                                   "it and recomputed when needed (default 1024)")
    p.add_argument("--idle-unload-s", type=float,
                   help="unload the model after this long without work (default 600)")
    p.add_argument("--idle-exit-s", type=float,
                   help="exit after this long without a client (default 1800)")
    p.add_argument("--compact-after-s", type=float,
                   help="compact edited documents after this long without edits (default 2)")
    p.add_argument("--threads", type=int,
                   help="torch threads for the worker (default 1; 0: torch's)")
    p.add_argument("--tcp-port", type=int, help="also listen on 127.0.0.1:PORT, with a token "
                                                "(0 picks a free port)")
    p.add_argument("--config", type=Path, help="settings file (default: "
                                               "$XDG_CONFIG_HOME/vqedit/daemon.toml)")


def run(args: argparse.Namespace) -> int:
    try:
        paths = Paths.default()
        paths.make_private()
    except UnsafeDirectoryError as e:
        raise CliError(str(e)) from None
    if args.action in ("run", "start") and args.config is not None:
        paths = Paths(**{**paths.__dict__, "config": args.config})
    if args.action == "run":
        return _run(args, paths)
    if args.action == "start":
        return _start(args, paths)
    if args.action == "stop":
        return _stop(paths)
    return _status(args, paths)


def _overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in SETTING_OPTIONS}


def _as_arguments(args: argparse.Namespace) -> list[str]:
    """The options given, as `daemon run` arguments again (for the daemon `start` spawns)."""
    given = {**_overrides(args), "config": args.config}
    return [part for name, value in given.items() if value is not None
            for part in (f"--{name.replace('_', '-')}", argument(value))]


def _run(args: argparse.Namespace, paths: Paths) -> int:
    from vqedit.daemon.server import AlreadyRunning, Daemon
    from vqedit.daemon.settings import resolve

    try:
        settings = resolve(paths.config, _overrides(args))
    except SettingsError as e:
        raise CliError(str(e)) from None
    for path in (settings.student, settings.head):
        if path is not None and not path.is_file():
            raise CliError(f"no such file: {path}")
    _log_to(paths)
    try:
        return Daemon(settings, paths, _overrides(args)).run()
    except AlreadyRunning as e:
        raise CliError(str(e)) from None


def _log_to(paths: Paths) -> None:
    """The log file, and standard error too when someone is watching it; standard error
    alone, with one warning, where the log cannot be written (a read-only state directory)."""
    handlers: list[logging.Handler] = []
    try:
        handlers.append(logging.FileHandler(paths.private_log()))
    except OSError as e:
        problem = f"cannot write the log {paths.log} ({e.strerror}): logging to standard error"
    else:
        problem = None
    if problem or sys.stderr.isatty():
        handlers.append(logging.StreamHandler())
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format="%(asctime)s %(process)d %(levelname)s %(message)s")
    if problem:
        logging.getLogger("vqedit.daemon").warning(problem)


def _start(args: argparse.Namespace, paths: Paths) -> int:
    from vqedit.daemon.client import DaemonClient

    pid = running_pid(paths)
    if pid is not None:
        raise CliError(f"a daemon is already running (pid {pid}); `vqedit daemon stop` first")
    try:
        with DaemonClient(daemon_args=_as_arguments(args), paths=paths) as client:
            welcome = client.welcome
    except (SpawnError, OSError) as e:
        raise CliError(str(e)) from None
    print(f"vqedit daemon {welcome.version} running, pid {welcome.pid}, socket {paths.socket}")
    return 0


def _stop(paths: Paths) -> int:
    from vqedit.daemon.client import DaemonClient, DaemonError

    pid = running_pid(paths)
    if pid is None:
        print("no daemon is running")
        return 0
    try:
        DaemonClient(paths=paths, auto_spawn=False).shutdown()
    except (ConnectionError, DaemonError):
        if pid > 0:  # running but not answering: ask the process itself
            os.kill(pid, signal.SIGTERM)
    if not wait_for_exit(paths, 30):
        raise CliError(f"the daemon (pid {pid}) did not stop within 30 s")
    print(f"stopped the daemon (pid {pid})")
    return 0


def _status(args: argparse.Namespace, paths: Paths) -> int:
    from vqedit.daemon.client import DaemonClient, DaemonError

    if running_pid(paths) is None:
        print("no daemon is running")
        return NOT_RUNNING
    try:
        with DaemonClient(paths=paths, auto_spawn=False) as client:
            stats = client.stats()
    except (ConnectionError, DaemonError) as e:
        raise CliError(f"a daemon is running but does not answer: {e}") from None
    if args.json:
        print(json.dumps(stats))
    else:
        for key, value in stats.items():
            print(f"{key}: {value}")
    return 0
