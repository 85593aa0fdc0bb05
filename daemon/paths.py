"""Where the daemon's files live, per user.

    runtime  $XDG_RUNTIME_DIR/vqedit (fallback: <temp dir>/vqedit-<uid>), mode 0700:
             daemon.sock (0600), daemon.pid, daemon.lock (spawn lock), tcp.json (port + token)
    state    $XDG_STATE_HOME/vqedit (fallback: ~/.local/state/vqedit): daemon.log (and the
             language server's ignored-labels.json, lsp/ignored.py)
    config   $XDG_CONFIG_HOME/vqedit/daemon.toml (fallback: ~/.config/vqedit/daemon.toml)

The runtime directory is the security boundary: only its owner may enter it, so only the owner
can reach the socket. A directory of that name owned by someone else is refused, not reused, and
a client checks the directory and the socket before it connects: with the fallback's predictable
name, another local user could otherwise make both and receive every document sent to "the
daemon". The state directory and the log in it are 0700 and 0600: the log names documents.
"""

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path


class UnsafeDirectoryError(ConnectionError):
    """The runtime directory or the socket in it is not this user's alone: no connection is
    made. The message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Paths:
    runtime: Path  # private directory for the socket, pid file, spawn lock and TCP token
    socket: Path  # the Unix socket clients connect to
    pid: Path  # the running daemon's pid, locked (flock) for as long as it lives
    lock: Path  # held by a client while it checks for, and maybe spawns, a daemon
    tcp: Path  # {"port", "token"} when the daemon listens on loopback TCP
    log: Path  # the daemon's log file
    config: Path  # optional settings (TOML), reloaded when it changes

    @classmethod
    def default(cls) -> "Paths":
        runtime = _runtime_dir()
        state = _xdg("XDG_STATE_HOME", ".local/state") / "vqedit"
        config = _xdg("XDG_CONFIG_HOME", ".config") / "vqedit" / "daemon.toml"
        return cls(runtime, runtime / "daemon.sock", runtime / "daemon.pid",
                   runtime / "daemon.lock", runtime / "tcp.json", state / "daemon.log", config)

    def make_private(self) -> None:
        """Create the runtime directory 0700, or check that an existing one is ours alone."""
        self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(self.runtime)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise UnsafeDirectoryError(
                f"{self.runtime} is not a directory owned by uid {os.getuid()}; remove it or "
                "set XDG_RUNTIME_DIR to a private directory")
        if stat.S_IMODE(info.st_mode) != 0o700:
            os.chmod(self.runtime, 0o700)

    def check_private(self) -> None:
        """Before connecting: the runtime directory must be this user's and writable by no one
        else, and the socket in it this user's, or `UnsafeDirectoryError`. Nothing there yet
        passes (there is no daemon to reach)."""
        uid = os.getuid()
        info = _lstat(self.runtime)
        if info is not None and (not stat.S_ISDIR(info.st_mode) or info.st_uid != uid):
            raise UnsafeDirectoryError(
                f"refusing to connect: {self.runtime} is not a directory owned by you (uid "
                f"{uid}, it is uid {info.st_uid}'s); another user could be listening there. "
                "Remove it, or set XDG_RUNTIME_DIR to a private directory")
        if info is not None and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafeDirectoryError(
                f"refusing to connect: other users may write to {self.runtime} (mode "
                f"{stat.S_IMODE(info.st_mode):o}) and so replace the socket; run "
                f"`chmod 700 {self.runtime}`")
        socket_info = _lstat(self.socket) if info is not None else None
        if socket_info is not None and (not stat.S_ISSOCK(socket_info.st_mode)
                                        or socket_info.st_uid != uid):
            raise UnsafeDirectoryError(
                f"refusing to connect: {self.socket} is not a socket owned by you (uid {uid}); "
                "remove it (a daemon you start makes a new one)")

    def private_log(self) -> Path:
        """The log file, made 0600 in a 0700 directory (it names the documents edited)."""
        self.log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        for path, mode in ((self.log.parent, 0o700), (self.log, 0o600)):
            if stat.S_IMODE(os.stat(path).st_mode) != mode:
                os.chmod(path, mode)
        return self.log


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and Path(base).is_dir():
        return Path(base) / "vqedit"
    return Path(tempfile.gettempdir()) / f"vqedit-{os.getuid()}"


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else Path.home() / fallback
