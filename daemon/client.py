"""The Python client library: connect to the user's daemon, or start one, and keep documents.

Usage:

    from vqedit.daemon.client import DaemonClient
    from vqedit.daemon.protocol import Edit

    with DaemonClient(daemon_args=["--idle-exit-s", "600"]) as client:
        client.open("file:///notes.md", "Some prose.", version=1)
        client.change("file:///notes.md", 2, [Edit(5, 5, "more ")])
        print(client.wait_for("file:///notes.md", 2).label)

The client keeps its own copy of every document it opened. If the daemon goes away (a crash,
`kill -9`, idle exit), the next call starts a new one and reopens every document at its newest
text and version, so the caller never resends anything; with `recover=True` (the language
server) that happens as soon as the connection closes, so results come back after a crash even
when no further call is made. Starting is done under a file lock, so
that clients starting at once end up sharing one daemon; a stale socket or pid file left by a
dead daemon is removed; a daemon of another vqedit version is stopped and replaced (once).

A version the daemon could not compute (a pass that raised, or no model) arrives as a `failed`
notification: `wait_for` raises `DaemonError` with the daemon's message at once, and
`on_failed`, if given, hears of it. The daemon keeps the text; the next change computes again.

Thread-safety: every method may be called from any thread. Results and failures arrive on a
reader thread; `on_results` and `on_failed`, if given, are called there and must not call the
client (it would wait on itself).
"""

import contextlib
import itertools
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from filelock import FileLock

from vqedit import __version__
from vqedit.text.edit import Edit, apply_all

from . import protocol as wire
from .lifecycle import SpawnError, log_tail, remove_stale, running_pid, spawn, wait_for_exit
from .paths import Paths, UnsafeDirectoryError

log = logging.getLogger("vqedit.client")
# Waits before each try to reconnect after losing the daemon: at once, then backing off while a
# crashing or just-killed daemon is replaced (its start-up error is in its log).
RECOVERY_DELAYS_S = (0.0, 0.5, 1.0, 2.0, 4.0)


class DaemonError(Exception):
    """The daemon answered a request with an error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code


class DaemonClient:
    def __init__(self, daemon_args: list[str] | None = None, paths: Paths | None = None,
                 spawn_timeout: float = 120.0, request_timeout: float = 120.0,
                 on_results: Callable[[wire.Results], None] | None = None,
                 version: str = __version__, auto_spawn: bool = True,
                 on_failed: Callable[[wire.Failed], None] | None = None,
                 recover: bool = False) -> None:
        self.paths = paths or Paths.default()
        self.daemon_args = daemon_args or []  # options for a daemon this client starts
        self.spawn_timeout = spawn_timeout
        self.request_timeout = request_timeout
        self.on_results = on_results
        self.on_failed = on_failed
        self.version = version  # a daemon reporting another version is replaced
        self.auto_spawn = auto_spawn
        self.recover = recover  # reconnect as soon as the daemon goes away, not at the next call
        self.welcome: wire.Welcome | None = None
        self.spawned: list[subprocess.Popen] = []  # daemons this client started
        self._docs: dict[str, _Document] = {}  # what a resync reopens
        self._latest: dict[str, wire.Results] = {}  # uri → newest results received
        self._failed: dict[str, wire.Failed] = {}  # uri → newest failure not followed by results
        self._lock = threading.RLock()  # guards the connection and _docs
        self._results = threading.Condition()  # guards _latest
        self._sock: socket.socket | None = None
        self._pending: dict[int, Future] = {}  # this connection's requests awaiting replies
        self._lost = threading.Event()  # the current connection's reader has stopped
        self._ids = itertools.count(1)
        self._stopping = False  # shutdown asked: the connection's end is expected

    def __enter__(self) -> "DaemonClient":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # --- documents -------------------------------------------------------------------------

    def open(self, uri: str, text: str, version: int,
             labels: dict[str, str] | None = None) -> None:
        """Open a document, scored by zero-shot `labels` ({name: description}) if given."""
        with self._lock:
            self._docs[uri] = _Document(text, version, labels)
            self._forget_failure(uri)  # a failure of the text this one replaces
            self._call("open", self._docs[uri].open_params(uri), resync_covers=True)

    def change(self, uri: str, version: int, edits: list[Edit], after: str | None = None) -> None:
        """Apply edits to our copy (ValueError if one misfits, nothing sent) and send them.
        `after`, the text they lead to where the caller has it (the language server, which made
        the edits from it), becomes our copy as it is: the edits are not checked twice in one
        process, and the process holds one copy of the text."""
        with self._lock:
            document = self._docs[uri]
            # EditError (a ValueError) if one misfits
            text = apply_all(document.text, edits) if after is None else after
            self._docs[uri] = replace(document, text=text, version=version)
            self._call("change", {"uri": uri, "version": version,
                                  "edits": [wire.to_wire(e) for e in edits]}, resync_covers=True)

    def close(self, uri: str) -> None:
        with self._lock:
            self._docs.pop(uri)
            self._forget_failure(uri)
            self._call("close", {"uri": uri}, resync_covers=True)

    def set_labels(self, uri: str, labels: dict[str, str] | None) -> None:
        """Score a document with other zero-shot labels (None: the daemon's head)."""
        with self._lock:
            self._docs[uri] = replace(self._docs[uri], labels=labels)
            self._call("labels", {"uri": uri, "labels": labels}, resync_covers=True)

    def text(self, uri: str) -> str:
        return self._docs[uri].text

    def results(self, uri: str) -> wire.Results | None:
        """Ask for the newest computed results (maybe older than the newest version)."""
        found = self._call("results", {"uri": uri})
        return None if found is None else wire.Results.parse(found)

    def wait_for(self, uri: str, version: int, timeout: float = 120.0) -> wire.Results:
        """Block until results for `version` (or newer) of `uri` have been pushed; raises
        DaemonError (the daemon's code and message) as soon as the daemon reports that it
        failed to compute `version` or a newer one."""
        deadline = time.monotonic() + timeout
        with self._results:
            while (found := self._latest.get(uri)) is None or found.version < version:
                failure = self._failed.get(uri)
                if failure is not None and failure.version >= version:
                    raise DaemonError(failure.code, f"{uri}: {failure.message}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no results for {uri} version {version} in {timeout} s")
                self._results.wait(left)
            return found

    def latest(self, uri: str) -> wire.Results | None:
        with self._results:
            return self._latest.get(uri)

    def failure(self, uri: str) -> wire.Failed | None:
        """The newest failure of `uri` that no results have followed, if any."""
        with self._results:
            return self._failed.get(uri)

    def stats(self) -> dict[str, Any]:
        return self._call("stats", {})

    def reload(self) -> None:
        self._call("reload", {})

    def shutdown(self) -> None:
        """Stop the daemon for every client, and wait until it is gone."""
        self._stopping = True
        self._call("shutdown", {})
        wait_for_exit(self.paths, self.spawn_timeout)
        self.disconnect()

    # --- the connection --------------------------------------------------------------------

    def connect(self) -> wire.Welcome:
        """Connect, starting a daemon if there is none, and reopen our documents."""
        self._ensure_connected()
        return self.welcome

    def _ensure_connected(self) -> bool:
        """True if this made a new connection (and so reopened every document)."""
        with self._lock:
            if self._sock is not None:
                return False
            self._establish(restarted=False)
            for uri, document in self._docs.items():
                self._request("open", document.open_params(uri))
            return True

    def disconnect(self) -> None:
        with self._lock:
            if self._sock is not None:
                # shutdown, not just close: the reader thread's blocked recv keeps the socket
                # open otherwise, and the daemon would think we are still there.
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
                self._sock.close()
                self._sock = None

    def _establish(self, restarted: bool) -> None:
        sock = self._try_connect()
        if sock is None:
            if not self.auto_spawn:
                raise ConnectionError(f"no daemon is listening on {self.paths.socket}")
            sock = self._start_daemon()
        self._attach(sock)
        try:
            welcome = wire.Welcome(**self._request(
                "hello", {"protocol": wire.PROTOCOL_VERSION,
                          "client": f"vqedit-client {self.version} (pid {os.getpid()})"}))
        except DaemonError as e:
            if e.code != wire.ErrorCode.PROTOCOL_MISMATCH:
                raise
            welcome = None
        if welcome is not None and welcome.version == self.version:
            self.welcome = welcome
            return
        if restarted:
            raise DaemonError(wire.ErrorCode.PROTOCOL_MISMATCH,
                              "the daemon started for this client reports another version "
                              f"({welcome.version if welcome else 'another protocol'})")
        log.info("replacing a daemon of another version")
        self._stop_daemon()
        self._establish(restarted=True)

    def _try_connect(self) -> socket.socket | None:
        self.paths.check_private()  # never hand a document to another user's socket
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.paths.socket))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        return sock

    def _start_daemon(self) -> socket.socket:
        """Under the spawn lock: connect if another client won the race, else start one."""
        self.paths.make_private()
        with FileLock(str(self.paths.lock), timeout=self.spawn_timeout):
            sock = self._try_connect()
            if sock is not None:
                return sock
            if running_pid(self.paths) is None:
                remove_stale(self.paths)
                process = spawn(self.paths, self.daemon_args)
                self.spawned.append(process)
            else:
                process = None  # starting up, not listening yet
            deadline = time.monotonic() + self.spawn_timeout
            while (sock := self._try_connect()) is None:
                if process is not None and process.poll() is not None:
                    raise SpawnError(f"the daemon exited with status {process.returncode}: "
                                     f"{log_tail(self.paths.log)}")
                if time.monotonic() > deadline:
                    raise SpawnError(f"the daemon did not listen within {self.spawn_timeout} s: "
                                     f"{log_tail(self.paths.log)}")
                time.sleep(0.05)
            return sock

    def _stop_daemon(self) -> None:
        pid = running_pid(self.paths)
        self.disconnect()
        if pid and pid > 0:
            os.kill(pid, 15)
            if not wait_for_exit(self.paths, self.spawn_timeout):
                raise SpawnError(f"the old daemon (pid {pid}) did not exit")

    def _attach(self, sock: socket.socket) -> None:
        self._sock, self._lost, self._pending = sock, threading.Event(), {}
        threading.Thread(target=self._read, args=(sock, self._lost, self._pending),
                         name="vqedit-client-reader", daemon=True).start()

    def _read(self, sock: socket.socket, lost: threading.Event,
              pending: dict[int, Future]) -> None:
        """Reader thread: responses to their futures, results to `_latest` and `on_results`,
        failures to `_failed` and `on_failed`."""
        try:
            while (payload := wire.recv_frame(sock)) is not None:
                message = wire.decode(payload)
                if "id" in message:
                    future = pending.pop(message["id"], None)
                    if future is not None:
                        future.set_result(message)
                elif message.get("method") == "results":
                    self._received(wire.Results.parse(message["params"]))
                elif message.get("method") == "failed":
                    self._received_failure(wire.Failed.parse(message["params"]))
        except (OSError, wire.ProtocolError, ConnectionError):
            pass
        finally:
            # Fail waiting requests before taking the lock: a caller holds it while it waits.
            lost.set()
            for rid in list(pending):
                future = pending.pop(rid, None)
                if future is not None and not future.done():
                    future.set_exception(ConnectionError("daemon connection lost"))
            with self._lock:
                unexpected = self._sock is sock  # not our own disconnect
                if unexpected:
                    self._sock = None
            if unexpected and self.recover and self.auto_spawn and self._docs \
                    and not self._stopping:
                threading.Thread(target=self._recover, name="vqedit-client-recover",
                                 daemon=True).start()

    def _recover(self) -> None:
        """The daemon went away by itself (a crash, a kill): start or find one and reopen
        every document now, so that fresh results come without waiting for the next request
        (after the last keystroke there may be none)."""
        for delay in RECOVERY_DELAYS_S:
            time.sleep(delay)
            try:
                self._ensure_connected()
                return
            except (SpawnError, DaemonError, OSError) as e:
                log.warning("reconnecting after losing the daemon failed: %s", e)

    def _received(self, results: wire.Results) -> None:
        with self._results:
            known = self._latest.get(results.uri)
            if known is None or results.version >= known.version:
                self._latest[results.uri] = results
            failure = self._failed.get(results.uri)
            if failure is not None and results.version >= failure.version:
                del self._failed[results.uri]  # computed since: the failure is over
            self._results.notify_all()
        if self.on_results is not None:
            self.on_results(results)

    def _received_failure(self, failure: wire.Failed) -> None:
        with self._results:
            self._failed[failure.uri] = failure
            self._results.notify_all()
        if self.on_failed is not None:
            self.on_failed(failure)

    def _forget_failure(self, uri: str) -> None:
        with self._results:
            self._failed.pop(uri, None)

    def _call(self, method: str, params: dict[str, Any], resync_covers: bool = False) -> Any:
        """A request; on a lost connection, reconnect (resyncing documents) and resend it.

        Document methods pass resync_covers=True: a reconnect reopens every document at its
        newest text and version, which already carries them, so they are not sent again.
        """
        with self._lock:
            for delay in (None, *RECOVERY_DELAYS_S):  # the call, then reconnections
                if delay is not None:  # a daemon dying as we reach it drops us mid-handshake
                    self.disconnect()
                    time.sleep(delay)
                try:
                    if self._ensure_connected() and resync_covers:
                        return None
                    return self._request(method, params)
                except UnsafeDirectoryError:
                    raise
                except ConnectionError as e:
                    lost = e
            raise lost

    def _request(self, method: str, params: dict[str, Any]) -> Any:
        rid, future = next(self._ids), Future()
        self._pending[rid] = future
        sock = self._sock
        if sock is None or self._lost.is_set():
            self._pending.pop(rid, None)
            raise ConnectionError("not connected")
        try:
            sock.sendall(wire.encode({"id": rid, "method": method, "params": params}))
        except OSError as e:
            self._pending.pop(rid, None)
            raise ConnectionError(str(e)) from e
        reply = future.result(timeout=self.request_timeout)
        if "error" in reply:
            raise DaemonError(reply["error"]["code"], reply["error"]["message"])
        return reply.get("result")


@dataclass(frozen=True)
class _Document:
    """The client's copy of an open document: what reopens it after a reconnect."""

    text: str
    version: int
    labels: dict[str, str] | None

    def open_params(self, uri: str) -> dict[str, Any]:
        return {"uri": uri, "version": self.version, "text": self.text, "labels": self.labels}

