"""Nobody else's socket, nobody else's code: what a client and a spawned daemon refuse.

With XDG_RUNTIME_DIR unset the runtime directory has a predictable name, so another local user
can make it first and listen there; and editors start servers in the project folder, so code
planted in the working directory must never run in the shared daemon.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_harness import private_dirs, wait_until
from vqedit.daemon.client import DaemonClient
from vqedit.daemon.lifecycle import argument
from vqedit.daemon.paths import UnsafeDirectoryError

STRANGER = 65534  # nobody


def _squatter(path: Path) -> socket.socket:
    """A world-open socket listening at `path`, as another user would leave it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen()
    listener.settimeout(0.5)
    os.chmod(path, 0o777)
    return listener


def _connected(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except TimeoutError:
        return False
    return True


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to make files another user owns")
@pytest.mark.parametrize("planted", ["directory", "socket"])
def test_a_client_never_connects_to_a_socket_another_user_planted(planted):
    """Another user's runtime directory, or their socket in ours: refused, saying how to fix
    it, before a byte is sent; the CLI says so in one line and exits 2."""
    with private_dirs() as paths:
        paths.runtime.mkdir(mode=0o700)
        listener = _squatter(paths.socket)
        owned = paths.runtime if planted == "directory" else paths.socket
        os.chown(owned, STRANGER, STRANGER)
        if planted == "directory":
            os.chmod(paths.runtime, 0o777)
        client = DaemonClient(paths=paths, auto_spawn=False)
        with pytest.raises(UnsafeDirectoryError, match="owned by you") as refused:
            client.connect()
        assert ("XDG_RUNTIME_DIR" if planted == "directory" else "remove it") in str(refused.value)
        assert not _connected(listener)
        start = subprocess.run([sys.executable, "-m", "vqedit", "daemon", "start"],
                               capture_output=True, timeout=120)
        assert start.returncode == 2 and len(start.stderr.decode().strip().splitlines()) == 1
        assert not _connected(listener)
        listener.close()


def test_a_client_refuses_a_runtime_directory_others_may_write():
    with private_dirs() as paths:
        paths.runtime.mkdir(mode=0o700)
        listener = _squatter(paths.socket)
        os.chmod(paths.runtime, 0o777)
        with pytest.raises(UnsafeDirectoryError, match=f"chmod 700 {paths.runtime}"):
            DaemonClient(paths=paths, auto_spawn=False).connect()
        assert not _connected(listener)
        listener.close()


def test_code_in_the_working_directory_never_runs_in_the_daemon(tiny, tmp_path, monkeypatch):
    """A module planted where the editor started the server (a stdlib name the daemon imports,
    and a fake vqedit) is not imported by the daemon the client spawns."""
    marker = tmp_path / "imported"
    planted = f"open({str(marker)!r}, 'w').write(__name__)\n"
    project = tmp_path / "project"
    (project / "vqedit").mkdir(parents=True)
    (project / "resource.py").write_text(planted)
    (project / "vqedit" / "__init__.py").write_text(planted)
    monkeypatch.chdir(project)
    with private_dirs() as paths, DaemonClient(daemon_args=tiny.daemon_args(),
                                               paths=paths) as client:
        assert client.stats()["sessions"] == 1
    assert not marker.exists(), f"the daemon imported the planted {marker.read_text()}"


def test_relative_paths_reach_the_daemon_absolute(tmp_path, monkeypatch):
    """The daemon starts in its own directory, so a relative --student must be made absolute."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "student.safetensors").write_bytes(b"")
    assert argument(Path("student.safetensors")) == str(tmp_path / "student.safetensors")
    assert argument("student.safetensors") == str(tmp_path / "student.safetensors")
    assert argument("facebook/opt-125m") == "facebook/opt-125m"  # a hub name, not a path
    assert argument(8.0) == "8.0"


def test_a_state_directory_that_cannot_be_written_costs_the_log_not_the_daemon(tiny, tmp_path,
                                                                                monkeypatch):
    """The daemon runs and answers with its log directory unusable (here a file stands where
    the directory should be: root writes through read-only modes); `run` warns once on
    standard error."""
    with private_dirs() as paths:
        blocked = tmp_path / "state"
        blocked.write_text("not a directory")
        monkeypatch.setenv("XDG_STATE_HOME", str(blocked))
        run = subprocess.Popen([sys.executable, "-m", "vqedit", "daemon", "run",
                                *tiny.daemon_args()], stderr=subprocess.PIPE)
        try:
            wait_until(lambda: paths.socket.exists(), what="the daemon listening")
            with DaemonClient(paths=paths, auto_spawn=False) as client:
                assert client.stats()["sessions"] == 1
        finally:
            run.terminate()
            warnings = run.communicate(timeout=60)[1].decode()
        assert warnings.count("cannot write the log") == 1, warnings[-2000:]
