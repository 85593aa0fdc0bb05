"""Where the daemon's files live, per user.

    runtime  $XDG_RUNTIME_DIR/vqedit (fallback: <temp dir>/vqedit-<uid>), mode 0700:
             daemon.sock (0600), daemon.pid, daemon.lock (spawn lock), tcp.json (port + token)
    state    $XDG_STATE_HOME/vqedit (fallback: ~/.local/state/vqedit): daemon.log (and the
             language server's ignored-labels.json, lsp/ignored.py)
    config   $XDG_CONFIG_HOME/vqedit/daemon.toml (fallback: ~/.config/vqedit/daemon.toml)

The runtime directory is the security boundary: only its owner may enter it, so only the owner
can reach the socket. A directory of that name owned by someone else is refused, not reused.
"""

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path


class UnsafeDirectoryError(RuntimeError):
    """The runtime directory exists but another user could use it; the message says which."""


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


def _runtime_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and Path(base).is_dir():
        return Path(base) / "vqedit"
    return Path(tempfile.gettempdir()) / f"vqedit-{os.getuid()}"


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else Path.home() / fallback
