"""Driving `vqedit lsp` over stdio as an editor does: the one driver behind `vqedit replay --via
lsp` and `vqedit bench lsp`.

Usage:

    with LspDriver(settings={"debounceMs": 0}) as lsp:   # starts `vqedit lsp`, initializes
        lsp.open("file:///a.md", "Some prose.", 1)
        lsp.change("file:///a.md", 2, [editlog.Content("x", editlog.Range.at(0, 4))])
        published = lsp.wait_published("file:///a.md", 2)   # its publishDiagnostics

The client is pygls's `LanguageClient`, run on an event loop in a thread of its own, so that
notifications are timestamped when they arrive, whatever the caller is doing. The driver starts
the server process itself and hands its pipes to the client's protocol (pygls's public
`protocol.set_writer` and `pygls.io_.run_async`), so it can watch the process without reaching
into the client. Positions are sent
in the encoding the server negotiated (`encoding`); `content_changes` converts code-point edits.
"""

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.io_ import run_async
from pygls.lsp.client import LanguageClient

from vqedit import __version__
from vqedit.lsp import editlog
from vqedit.text.edit import Edit

log = logging.getLogger("vqedit.lab.replay.driver")
_ENCODINGS = {"utf-16": types.PositionEncodingKind.Utf16, "utf-8": types.PositionEncodingKind.Utf8,
              "utf-32": types.PositionEncodingKind.Utf32}


@dataclass(frozen=True)
class Published:
    version: int | None  # the document version the diagnostics are for
    at: float  # time.perf_counter() when they arrived
    diagnostics: int  # how many


@dataclass
class DocumentLog:
    """What the server sent about one document, in arrival order."""

    published: list[Published] = field(default_factory=list)
    status: list[dict[str, Any]] = field(default_factory=list)  # vqedit/status params
    computed: list[tuple[int, float]] = field(default_factory=list)  # (a status's resultsVersion,
    # when it arrived): results computed for that version were published then
    stale: int = 0  # publishes for a version older than one already published
    failed: list[tuple[int, str]] = field(default_factory=list)  # (a status's failedVersion, its
    # message): the server could not compute that version


class LspDriver:
    def __init__(self, settings: dict[str, Any] | None = None,
                 command: list[str] | None = None, encodings: tuple[str, ...] = ("utf-16",),
                 stderr: Path | None = None, timeout: float = 600.0) -> None:
        self.settings = settings or {}  # the `vqedit` section, as an editor would send it
        self.server_command = command or [sys.executable, "-m", "vqedit", "lsp"]
        self.offered = encodings  # position encodings offered, preferred first
        self.stderr_path = stderr  # the server's standard error goes here (else the log)
        self.timeout = timeout
        self.encoding = "utf-16"  # as negotiated in initialize
        self.documents: dict[str, DocumentLog] = {}
        self.messages: list[str] = []  # window/showMessage texts (errors the user would see)
        self._changed = threading.Condition()  # notified on every publish and status
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vqedit-lsp-client",
                                        daemon=True)
        self._client = LanguageClient("vqedit-driver", __version__)
        self._process: asyncio.subprocess.Process | None = None  # the server, once started
        self._stopping = threading.Event()  # ends the loop reading the server's messages
        self._tasks: list[asyncio.Future] = []  # reading its stdout and its stderr
        self._register()

    # --- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> "LspDriver":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> types.InitializeResult:
        self._thread.start()
        self._run(self._start_server())
        capabilities = types.ClientCapabilities(
            general=types.GeneralClientCapabilities(
                position_encodings=[_ENCODINGS[e] for e in self.offered]),
            workspace=types.WorkspaceClientCapabilities(configuration=True),
            window=types.WindowClientCapabilities(work_done_progress=True),
            text_document=types.TextDocumentClientCapabilities(
                synchronization=types.TextDocumentSyncClientCapabilities(),
                publish_diagnostics=types.PublishDiagnosticsClientCapabilities(
                    version_support=True)))
        result = self._run(self._client.initialize_async(types.InitializeParams(
            capabilities=capabilities, process_id=None, root_uri=None,
            initialization_options=self.settings,
            client_info=types.ClientInfo("vqedit-driver", __version__))))
        negotiated = result.capabilities.position_encoding or "utf-16"
        self.encoding = str(getattr(negotiated, "value", negotiated))
        self._client.initialized(types.InitializedParams())
        return result

    def stop(self) -> None:
        """Shut the server down the LSP way (shutdown, exit) and wait for its process."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._run(self._client.shutdown_async(None), timeout=30)
            self._client.exit(None)
        with contextlib.suppress(Exception):
            self._run(self._finish(), timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def returncode(self) -> int | None:
        """The server's exit status; None while it runs (or before it started)."""
        return None if self._process is None else self._process.returncode

    # --- documents --------------------------------------------------------------------------

    def open(self, uri: str, text: str, version: int, language: str = "markdown") -> None:
        self.documents.setdefault(uri, DocumentLog())
        item = types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)
        self._call(self._client.text_document_did_open,
                   types.DidOpenTextDocumentParams(text_document=item))

    def change(self, uri: str, version: int, contents: list[editlog.Content]) -> float:
        """Send one didChange; returns when it was sent (time.perf_counter())."""
        changes = [types.TextDocumentContentChangeWholeDocument(text=c.text) if c.range is None
                   else types.TextDocumentContentChangePartial(range=_range(c.range), text=c.text)
                   for c in contents]
        params = types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=changes)
        sent = time.perf_counter()
        self._call(self._client.text_document_did_change, params)
        return sent

    def close(self, uri: str) -> None:
        self._call(self._client.text_document_did_close, types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))

    def command(self, name: str, *arguments: Any) -> Any:
        return self._run(self._client.workspace_execute_command_async(
            types.ExecuteCommandParams(command=name, arguments=list(arguments))))

    def content_changes(self, text: str,
                        edits: tuple[Edit, ...]) -> list[editlog.Content]:
        """Code-point edits of `text`, in order, as content changes in the negotiated encoding."""
        contents = []
        for edit in edits:
            contents.append(editlog.content_for(text, edit, self.encoding))
            text = edit.applied(text)
        return contents

    # --- waiting for the server ---------------------------------------------------------------

    # Each wait raises RuntimeError at once when the server's status says that `version` of
    # `uri`, or a newer one, failed: no results will come for it.

    def wait_published(self, uri: str, version: int) -> Published:
        """The first publishDiagnostics of `uri` for `version` or a newer one."""
        return self._wait(lambda: next((p for p in self.documents[uri].published
                                        if p.version is not None and p.version >= version),
                                       None), uri, version, "diagnostics")

    def wait_computed(self, uri: str, version: int) -> float:
        """When diagnostics of results computed for `version` or a newer one arrived (the first
        publish at `version` may carry older results moved onto it)."""
        return self._wait(lambda: next((at for computed, at in self.documents[uri].computed
                                        if computed >= version), None),
                          uri, version, "results computed")

    def wait_status(self, uri: str, version: int, after: int = 0) -> dict[str, Any]:
        """The first vqedit/status of `uri` with results computed for `version` or newer, among
        those after the first `after` received."""
        def ready(s: dict[str, Any]) -> bool:
            return (s.get("state") != "loading" and s.get("resultsVersion") is not None
                    and s["resultsVersion"] >= version)

        return self._wait(lambda: next((s for s in self.documents[uri].status[after:] if ready(s)),
                                       None), uri, version, "status")

    def _wait(self, found, uri: str, version: int, what: str):
        deadline = time.monotonic() + self.timeout
        with self._changed:
            while (value := found()) is None:
                failed = next((message for at, message in self.documents[uri].failed
                               if at >= version), None)
                if failed is not None:
                    raise RuntimeError(f"the language server could not compute {uri} version "
                                       f"{version}: {failed}")
                left = deadline - time.monotonic()
                if left <= 0 or self.returncode is not None:
                    raise TimeoutError(f"no {what} of {uri} version {version} from the "
                                       f"language server (exit status {self.returncode}); "
                                       f"messages: "
                                       f"{self.messages[-3:]}")
                self._changed.wait(min(left, 1.0))
            return value

    # --- plumbing -----------------------------------------------------------------------------

    def _register(self) -> None:
        client = self._client

        @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def publish_diagnostics(params: types.PublishDiagnosticsParams) -> None:
            """textDocument/publishDiagnostics: timestamped, and counted when stale."""
            at = time.perf_counter()
            with self._changed:
                doc = self.documents.setdefault(params.uri, DocumentLog())
                newest = max((p.version for p in doc.published if p.version is not None),
                             default=None)
                if params.version is not None and newest is not None and params.version < newest:
                    doc.stale += 1
                doc.published.append(Published(params.version, at, len(params.diagnostics)))
                self._changed.notify_all()

        @client.feature("vqedit/status")
        def status(params: Any) -> None:
            """vqedit/status: the document label for status lines (docs/lsp.md)."""
            value = _plain(params)
            at = time.perf_counter()
            with self._changed:
                doc = self.documents.setdefault(value.get("uri"), DocumentLog())
                doc.status.append(value)
                if value.get("resultsVersion") is not None:
                    doc.computed.append((value["resultsVersion"], at))
                if value.get("failedVersion") is not None:
                    doc.failed.append((value["failedVersion"], value.get("message") or "?"))
                self._changed.notify_all()

        @client.feature(types.WORKSPACE_CONFIGURATION)
        def configuration(params: types.ConfigurationParams) -> list[Any]:
            """workspace/configuration: our settings for the `vqedit` section."""
            return [self.settings if item.section == "vqedit" else None for item in params.items]

        @client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def progress_create(params: types.WorkDoneProgressCreateParams) -> None:
            """window/workDoneProgress/create: accepted; the progress itself is only logged."""

        @client.feature(types.PROGRESS)
        def progress(params: types.ProgressParams) -> None:
            """$/progress: logged."""
            log.debug("progress %s", params.value)

        @client.feature(types.WINDOW_SHOW_MESSAGE)
        def show_message(params: types.ShowMessageParams) -> None:
            """window/showMessage: kept, so a failure can say what the server told the user."""
            self.messages.append(params.message)

        @client.feature(types.WINDOW_LOG_MESSAGE)
        def log_message(params: types.LogMessageParams) -> None:
            """window/logMessage: to our log."""
            log.debug("server: %s", params.message)

    async def _start_server(self) -> None:
        """Start the server and connect the client to its pipes; its standard error is read as
        it comes (a full pipe would block the server)."""
        process = self._process = await asyncio.create_subprocess_exec(
            *self.server_command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        self._client.protocol.set_writer(process.stdin)
        sink = self.stderr_path.open("ab") if self.stderr_path else None

        async def drain_stderr() -> None:
            while line := await process.stderr.readline():
                if sink is not None:
                    sink.write(line)
                    sink.flush()
                else:
                    log.debug("server stderr: %s", line.decode(errors="replace").rstrip())

        self._tasks = [asyncio.ensure_future(run_async(self._stopping, process.stdout,
                                                       self._client.protocol, log)),
                       asyncio.ensure_future(drain_stderr())]

    async def _finish(self) -> None:
        """After `exit`: wait for the server process and for its pipes to be read to the end."""
        self._stopping.set()
        if self._process is not None:
            await self._process.wait()
        await asyncio.gather(*self._tasks)

    def _run(self, coroutine: Coroutine, timeout: float | None = None) -> Any:
        """Run `coroutine` on the client's loop and wait for it; a server that exits meanwhile
        is an error at once, not after the timeout (a reply will never come)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                return future.result(min(max(deadline - time.monotonic(), 0), 0.5))
            except concurrent.futures.TimeoutError:
                if self.returncode is not None and not self._stopping.is_set():
                    future.cancel()
                    raise RuntimeError(f"the language server exited with status "
                                       f"{self.returncode}; messages: {self.messages[-3:]}"
                                       ) from None
                if time.monotonic() >= deadline:
                    raise

    def _call(self, method, params: Any) -> None:
        """A notification, sent from the loop's thread (pygls is not thread-safe)."""
        async def send() -> None:
            method(params)

        self._run(send())


def _plain(value: Any) -> Any:
    """JSON as dicts and lists: pygls hands a method it has no type for namedtuples of the
    JSON objects, nested ones too."""
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _range(r: editlog.Range) -> types.Range:
    return types.Range(start=types.Position(line=r.start.line, character=r.start.character),
                       end=types.Position(line=r.end.line, character=r.end.character))
