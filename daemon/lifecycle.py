"""Is a daemon running, and starting one: shared by the client library and `vqedit daemon`.

A live daemon holds an exclusive lock (flock) on its pid file for as long as it runs, so a pid
file nobody locks is stale whatever pid it names (a crash, `kill -9`, a reused pid), and so is
a socket file next to it.
"""

import fcntl
import os
import site
import subprocess
import sys
import time
from pathlib import Path

from .paths import Paths


class SpawnError(RuntimeError):
    """The daemon could not be started; the message quotes the end of its log."""


def running_pid(paths: Paths) -> int | None:
    """The pid of the live daemon, or None when there is none (the pid file is not locked)."""
    try:
        fd = os.open(paths.pid, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.read(fd, 32).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1  # -1: alive, pid not yet written
    else:
        return None
    finally:
        os.close(fd)


def remove_stale(paths: Paths) -> None:
    """Delete the socket and pid file a dead daemon left (call only when none is running)."""
    for path in (paths.socket, paths.pid, paths.tcp):
        path.unlink(missing_ok=True)


def spawn(paths: Paths, daemon_args: list[str]) -> subprocess.Popen:
    """Start `vqedit daemon run` in its own session, detached from our terminal.

    The daemon is shared and long-lived, so nothing of the caller's may run in it: the
    interpreter is isolated (`-I`: no working directory or script directory on the import path,
    no PYTHON* variables, no user site) and starts in the private runtime directory. Where
    vqedit itself is installed in the user site, `-E -P` do the same but keep that site.
    Relative paths in `daemon_args` must already be absolute (`argument`). Its standard error
    goes to the log file, so a crash before logging starts is still seen (nowhere, where the
    log cannot be written: the daemon runs all the same).
    """
    flags = ["-E", "-P"] if _in_user_site() else ["-I"]
    try:
        log = open(paths.private_log(), "ab")  # noqa: SIM115 (closed below, once started)
    except OSError:
        log = None  # a read-only state directory: the daemon says so on its standard error
    try:
        return subprocess.Popen([sys.executable, *flags, "-m", "vqedit", "daemon", "run",
                                 *daemon_args],
                                cwd=paths.runtime, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL,
                                start_new_session=True, close_fds=True)
    finally:
        if log is not None:
            log.close()


def argument(value: object) -> str:
    """A daemon option's value as an argument: paths absolute, as the daemon runs elsewhere."""
    if isinstance(value, Path) or (isinstance(value, str) and not Path(value).is_absolute()
                                   and Path(value).exists()):
        return str(Path(value).absolute())
    return str(value)


def _in_user_site() -> bool:
    user_site = site.getusersitepackages()
    return Path(__file__).resolve().is_relative_to(Path(user_site).resolve())


def wait_for_exit(paths: Paths, timeout: float) -> bool:
    """Wait until no daemon holds the pid file; True if it went away in time."""
    deadline = time.monotonic() + timeout
    while running_pid(paths) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
