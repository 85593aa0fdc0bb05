"""The daemon process: a Unix socket server, one session per connection, and the worker.

Usage (normally a client starts it; see docs/daemon.md):

    vqedit daemon run [--student FILE] [--head FILE] [--delta 8.0] [--memory-mb 1024]
                      [--idle-exit-s 1800] [--device auto|cpu|cuda] [--tcp-port PORT]

Layout of state, from shared to short-lived:
- shared: the model, loaded once (models.py), used by the one inference worker (worker.py);
- per session: a connection, whether it said `hello`, and its open documents (documents.py);
- per (document, version): an immutable `Results` snapshot, pushed and kept for `results`.

Bad input never takes the daemon down: a bad request gets an error reply on its connection, a
frame that cannot be delimited (oversize, truncated) closes that connection only, and an error
inside one document's computation resyncs that document alone; if that fails too, its client
gets a `failed` notification for the version and the document waits, text kept, for its next
change (worker.py).
"""

import asyncio
import contextlib
import fcntl
import hmac
import json
import logging
import os
import resource
import secrets
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vqedit import __version__

from . import protocol as wire
from .paths import Paths
from .settings import Settings, SettingsError, resolve
from .watch import FileWatcher
from .worker import Worker

log = logging.getLogger("vqedit.daemon")

MAX_BACKLOG = 64 * 2**20  # bytes queued for a client that stopped reading: then it is dropped
IDLE_CHECK_S = 0.5  # how often the idle-exit timer looks at the clock


class AlreadyRunning(RuntimeError):
    """Another daemon holds the pid file; the message gives its pid."""


@dataclass
class Session:
    id: int  # numbers connections in the log and keys their documents
    writer: asyncio.StreamWriter
    tcp: bool  # connected over TCP: `hello` must carry the token
    welcomed: bool = False  # `hello` succeeded; every other method needs it
    client: str = "?"  # the name the client gave in `hello`
    closing: bool = False  # set to close the connection after the current reply

    def send(self, message: dict[str, Any]) -> None:
        if self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > MAX_BACKLOG:
            log.warning("session %d stopped reading; closing it", self.id)
            self.writer.close()
            return
        try:
            frame = wire.encode(message)
        except wire.ProtocolError as e:  # too large to send: say so instead
            frame = wire.encode(wire.error_response(message.get("id"), e.code, e.message))
        self.writer.write(frame)


@dataclass
class Daemon:
    settings: Settings
    paths: Paths
    overrides: dict[str, Any] = field(default_factory=dict)  # options given: beat the config
    sessions: dict[int, Session] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    tcp_port: int | None = None
    token: str | None = None  # the TCP secret, when listening on TCP

    def __post_init__(self) -> None:
        self._next_session = 0
        self._last_client = time.monotonic()  # when the last client left (or we started)
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.worker = Worker(self.settings, self._publish)
        self._handlers: dict[str, Callable[[Session, dict[str, Any]], Any]] = {
            "hello": self.hello, "open": self.open, "change": self.change, "close": self.close,
            "labels": self.labels, "results": self.results, "stats": self.stats,
            "reload": self.reload, "shutdown": self.shutdown}

    # --- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until `shutdown`, SIGTERM/SIGINT or idle exit; returns the exit status."""
        return asyncio.run(self._serve())

    async def _serve(self) -> int:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self.paths.make_private()
        pid_fd = self._take_pid_file()
        servers = [await asyncio.start_unix_server(self._unix_client, sock=self._bind_unix())]
        if self.settings.tcp_port is not None:
            servers.append(await self._listen_tcp(self.settings.tcp_port))
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self._stopping.set)
        watcher = FileWatcher(self._watched_files(), self._files_changed)
        watcher.start()
        self.worker.start()
        log.info("vqedit %s daemon (pid %d) listening on %s", __version__, os.getpid(),
                 self.paths.socket)
        idle = asyncio.create_task(self._idle_exit())
        await self._stopping.wait()
        idle.cancel()
        log.info("shutting down")
        watcher.stop()
        for server in servers:
            server.close()
        for session in list(self.sessions.values()):
            session.writer.close()
        await asyncio.to_thread(self.worker.stop)
        for path in (self.paths.socket, self.paths.tcp, self.paths.pid):
            path.unlink(missing_ok=True)
        os.close(pid_fd)
        return 0

    def _take_pid_file(self) -> int:
        """Lock the pid file for our lifetime; whatever socket is left then is stale."""
        fd = os.open(self.paths.pid, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.paths.pid.read_text().strip()
            raise AlreadyRunning(f"a daemon is already running (pid {pid})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    def _bind_unix(self) -> socket.socket:
        self.paths.socket.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600, never briefly wider
        try:
            sock.bind(str(self.paths.socket))
        finally:
            os.umask(old)
        os.chmod(self.paths.socket, 0o600)
        return sock

    async def _listen_tcp(self, port: int) -> asyncio.Server:
        """Loopback only, and useless without the token written to the private runtime dir."""
        self.token = secrets.token_urlsafe(32)
        server = await asyncio.start_server(self._tcp_client, host="127.0.0.1", port=port)
        self.tcp_port = server.sockets[0].getsockname()[1]
        fd = os.open(self.paths.tcp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"port": self.tcp_port, "token": self.token}, f)
        log.info("also listening on 127.0.0.1:%d (token in %s)", self.tcp_port, self.paths.tcp)
        return server

    async def _idle_exit(self) -> None:
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            alone = time.monotonic() - self._last_client
            clients = any(session.welcomed for session in self.sessions.values())
            if not clients and alone >= self.worker.settings.idle_exit_s:
                log.info("no client for %.0f s: exiting", alone)
                self._stopping.set()
                return

    def _watched_files(self) -> list:
        from vqedit.engine.checkpoint import DEFAULT_STUDENT
        from vqedit.engine.heads import DEFAULT_HEAD

        s = self.settings
        return [s.student or DEFAULT_STUDENT, s.head or DEFAULT_HEAD, self.paths.config]

    def _files_changed(self) -> None:
        """A watched file changed (timer thread): reread the config, reload the model."""
        try:
            settings = resolve(self.paths.config, self.overrides)
        except SettingsError as e:
            log.error("config not reloaded: %s", e)
            return
        self.worker.request_reload(settings)

    # --- connections -----------------------------------------------------------------------

    async def _unix_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            log.warning("refused a connection from pid %d, uid %d (not ours)", pid, uid)
            writer.close()
            return
        await self._connection(reader, writer, tcp=False)

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        await self._connection(reader, writer, tcp=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          tcp: bool) -> None:
        self._next_session += 1
        session = Session(self._next_session, writer, tcp)
        self.sessions[session.id] = session
        try:
            while not session.closing:
                # Until a TCP client proves it has the token, it may send only small frames.
                limit = wire.PRE_AUTH_FRAME if tcp and not session.welcomed else wire.MAX_FRAME
                try:
                    payload = await wire.read_frame(reader, limit)
                except wire.ProtocolError as e:  # oversize: the stream cannot be resynchronised
                    session.send(wire.error_response(None, e.code, e.message))
                    break
                if payload is None:
                    break
                session.send(self._handle(session, payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away mid-frame: nothing to answer
        finally:
            del self.sessions[session.id]
            self.worker.close_session(session.id)
            if session.welcomed:  # a connection that never said hello was never a client
                self._last_client = time.monotonic()
            with contextlib.suppress(ConnectionError):
                writer.close()
                await writer.wait_closed()
            log.info("session %d (%s) closed", session.id, session.client)

    def _handle(self, session: Session, payload: bytes) -> dict[str, Any]:
        """One request → one response or error; never raises."""
        rid = None
        try:
            message = wire.decode(payload)
            rid = wire.request_id(message)
            request = wire.parse_request(message)
            handler = self._handlers.get(request.method)
            if handler is None:
                raise wire.ProtocolError(
                    wire.ErrorCode.METHOD_NOT_FOUND,
                    f"no method {wire.quote(request.method)}; the daemon knows "
                    f"{', '.join(wire.METHODS)}")
            if not session.welcomed and request.method != "hello":
                raise wire.ProtocolError(wire.ErrorCode.NOT_INITIALIZED,
                                         "send hello first, with the protocol version")
            return wire.response(rid, wire.to_wire(handler(session, request.params)))
        except wire.ProtocolError as e:
            return wire.error_response(rid, e.code, e.message)
        except Exception as e:
            log.exception("internal error in session %d", session.id)
            return wire.error_response(rid, wire.ErrorCode.INTERNAL_ERROR, f"internal error: {e}")

    def _publish(self, session_id: int, message: wire.Results | wire.Failed) -> None:
        """Worker thread → event loop: push results (or a failed pass) to the session that owns
        the document. One queue for both keeps them in the order the worker made them."""
        def push() -> None:
            session = self.sessions.get(session_id)
            if session is not None:
                session.send(wire.pushed(message))

        with contextlib.suppress(RuntimeError):  # the loop is gone: we are shutting down
            self._loop.call_soon_threadsafe(push)

    # --- methods: one per protocol method, named after it ----------------------------------

    def hello(self, session: Session, params: dict[str, Any]) -> wire.Welcome:
        """`hello`: check the protocol version (and on TCP the token); open the session."""
        if session.tcp and not _token_matches(params.get("token"), self.token):
            session.closing = True  # whatever the token is, if it is not ours: one answer
            raise wire.ProtocolError(wire.ErrorCode.UNAUTHORIZED,
                                     f"TCP clients must send the token from {self.paths.tcp}")
        hello = wire.Hello.parse(params)
        if hello.protocol != wire.PROTOCOL_VERSION:
            raise wire.ProtocolError(
                wire.ErrorCode.PROTOCOL_MISMATCH,
                f"this daemon (vqedit {__version__}, pid {os.getpid()}) speaks protocol "
                f"{wire.PROTOCOL_VERSION}, the client {hello.protocol}: stop it with "
                "`vqedit daemon stop` and let the client start its own, or upgrade the older side")
        session.welcomed, session.client = True, hello.client
        log.info("session %d: %s", session.id, hello.client)
        return wire.Welcome(wire.PROTOCOL_VERSION, __version__, os.getpid(), session.id)

    def open(self, session: Session, params: dict[str, Any]) -> None:
        """`open`: a document's whole text and version; its results follow as a notification."""
        doc = wire.Open.parse(params)
        self.worker.open((session.id, doc.uri), doc.text, doc.version, doc.labels)

    def change(self, session: Session, params: dict[str, Any]) -> None:
        """`change`: edits in order and the version they make; refused whole if one misfits."""
        change = wire.Change.parse(params)
        self.worker.change((session.id, change.uri), change.version,
                              list(change.edits))

    def close(self, session: Session, params: dict[str, Any]) -> None:
        """`close`: forget a document and its state."""
        self.worker.close((session.id, wire.DocumentRef.parse(params).uri))

    def labels(self, session: Session, params: dict[str, Any]) -> None:
        """`labels`: score a document with zero-shot labels (or the head again); results follow."""
        request = wire.Labels.parse(params)
        self.worker.set_labels((session.id, request.uri), request.labels)

    def results(self, session: Session, params: dict[str, Any]) -> wire.Results | None:
        """`results`: the newest results computed (null before the first)."""
        return self.worker.results((session.id, wire.DocumentRef.parse(params).uri))

    def stats(self, session: Session, params: dict[str, Any]) -> wire.Stats:
        """`stats`: what the daemon holds and has done."""
        worker, settings = self.worker, self.worker.settings
        documents, resident, state_bytes = worker.document_count()
        model = worker.models.model
        counters = worker.counters
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return wire.Stats(
            pid=os.getpid(), version=__version__, protocol=wire.PROTOCOL_VERSION,
            uptime_s=round(time.monotonic() - self.started, 3),
            model=model.name if model else None, model_error=worker.models.error,
            head=str(model.head_path) if model else str(settings.head),
            device=str(model.device) if model else settings.device, mode=settings.mode_name,
            sessions=len(self.sessions), documents=documents, resident_documents=resident,
            state_mb=round(state_bytes / 2**20, 3), memory_budget_mb=settings.memory_mb,
            evictions=counters.evictions, restored=counters.restored, edits=counters.edits,
            passes=counters.passes, superseded=counters.superseded,
            results_sent=counters.results_sent,
            compactions=counters.compactions, reloads=counters.reloads,
            resyncs=counters.resyncs, failures=counters.failures, stopped=counters.stopped,
            computing=worker.computing(), rss_mb=round(_rss_mb(rss_kb), 1),
            tcp_port=self.tcp_port)

    def reload(self, session: Session, params: dict[str, Any]) -> None:
        """`reload`: reread the config, reload the model, recompute every open document."""
        try:
            settings = resolve(self.paths.config, self.overrides)
        except SettingsError as e:
            raise wire.ProtocolError(wire.ErrorCode.INVALID_PARAMS, str(e)) from None
        self.worker.request_reload(settings)

    def shutdown(self, session: Session, params: dict[str, Any]) -> None:
        """`shutdown`: reply, then stop the daemon for every client."""
        log.info("session %d asked for shutdown", session.id)
        self._loop.call_soon(self._stopping.set)


def _rss_mb(peak_kb: int) -> float:
    """Resident memory now (from /proc), else the peak that getrusage reports."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_kb / 1024


def _token_matches(given: object, token: str | None) -> bool:
    """In constant time; any string, ASCII or not, is a fair guess (compared as UTF-8), and
    anything else a wrong one."""
    if not isinstance(given, str) or not given or not token:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode())
