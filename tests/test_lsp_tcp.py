"""`vqedit lsp --tcp HOST:PORT` exits cleanly, without a traceback: when the client disconnects
(closing, or resetting the connection with the server's messages unread), after `shutdown` and
`exit`, and on SIGINT or SIGTERM. A real server process and a real socket."""

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.daemon_harness import private_dirs

EXIT_TIMEOUT_S = 60


@pytest.fixture(scope="module", autouse=True)
def daemon_directories():
    """One private daemon for the module, spawned by the first server and stopped at the end."""
    with private_dirs() as paths:
        yield paths


class Connection:
    """A bare LSP connection over TCP (pytest-lsp speaks stdio only)."""

    def __init__(self, port: int) -> None:
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.reader = self.sock.makefile("rb")

    def send(self, method: str, params: Any = None, id: int | None = None) -> None:
        message = {"jsonrpc": "2.0", "method": method, "params": params}
        if id is not None:
            message["id"] = id
        body = json.dumps(message).encode()
        self.sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def reply(self, id: int) -> dict[str, Any]:
        """Read messages until the reply to request `id`."""
        while True:
            length = 0
            while (header := self.reader.readline()) != b"\r\n":
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            message = json.loads(self.reader.read(length))
            if message.get("id") == id and "method" not in message:
                return message

    def initialize(self) -> None:
        self.send("initialize", {"processId": None, "rootUri": None, "capabilities": {}}, id=1)
        assert "result" in self.reply(1)
        self.send("initialized", {})

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def reset(self) -> None:
        """Close with a reset, as a client does that goes with messages unread."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve() -> tuple[subprocess.Popen, Connection]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "vqedit", "lsp", "--tcp", f"127.0.0.1:{port}"],
                              stderr=subprocess.PIPE, text=True)
    connection = Connection(port)
    connection.initialize()
    return server, connection


def finished(server: subprocess.Popen) -> tuple[int, str]:
    _, stderr = server.communicate(timeout=EXIT_TIMEOUT_S)
    return server.returncode, stderr


@pytest.mark.parametrize("reset", [False, True])
def test_client_disconnect_ends_the_server(reset):
    server, connection = serve()
    if reset:
        connection.reset()
    else:
        connection.close()
    code, stderr = finished(server)
    assert code == 0 and "Traceback" not in stderr, stderr


@pytest.mark.parametrize("shutdown", [True, False])
def test_exit_ends_the_server_with_the_lsp_exit_code(shutdown):
    server, connection = serve()
    if shutdown:
        connection.send("shutdown", id=2)
        assert connection.reply(2)["result"] is None
    connection.send("exit")
    code, stderr = finished(server)
    connection.close()
    assert code == (0 if shutdown else 1) and "Traceback" not in stderr, stderr


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_server(number):
    server, connection = serve()
    server.send_signal(number)
    code, stderr = finished(server)
    connection.close()
    assert code == 0 and "Traceback" not in stderr, stderr
    assert f"{signal.Signals(number).name}: stopping" in stderr
