"""The language server: live labels and diagnostics for prose, from the daemon (the command
line and logging set-up are `cli/lsp_command.py`'s).

How an edit flows: `didChange` → `Documents.change` (our own copy of the text, positions in the
negotiated encoding converted to code points, Markdown code masked) → after `debounceMs` of
quiet, one backend `change` with every edit queued since the last, at the document's newest
revision → results pushed back on another thread → `received` on the event loop, which drops
results older than those already published and moves the rest onto the current text →
diagnostics with the client's current version, and `vqedit/status`. A version the backend
could not compute comes back as a `Failed` → `failed`: the status says so (state "error") and
the last good diagnostics stay, until results come again. One handler per LSP method lives in
`features/` as a plain function, bound to its method in `app.py`; this module owns the state
they share, what the server sends, and the order of backend calls.

Threads: pygls's event loop runs every handler and owns `Documents`; backend calls run in order
on one thread of their own (`_backend_thread`), so a slow one never holds up the editor.
"""

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, lsp_method

from vqedit import __version__
from vqedit.daemon.protocol import Failed, Results

from .backend import Backend, ModelState
from .documents import Document, Documents
from .features import diagnostics, status
from .ignored import IgnoredLabels
from .ignored import default_path as ignored_path
from .outbox import Outbox, Outgoing
from .recorder import Recorder
from .settings import Settings

log = logging.getLogger("vqedit.lsp")


class Protocol(LanguageServerProtocol):
    """pygls's protocol, choosing UTF-8 positions when the client offers them, else UTF-16,
    and keeping no text of its own: documents.py keeps the only copy, so pygls neither spends
    time applying every change a second time nor fails before our handler on an unknown
    document (which we log and ignore)."""

    def __init__(self, server: "VqeditServer", *args: Any) -> None:
        super().__init__(server, *args)
        self.vqedit = server  # pygls keeps its own reference private
        self.shut_down = False  # a `shutdown` request came (pygls keeps that private too)

    @lsp_method(types.SHUTDOWN)
    def lsp_shutdown(self, *args):
        self.shut_down = True
        return (yield from super().lsp_shutdown(*args))

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        general = params.capabilities.general
        offered = (general.position_encodings if general else None) or []
        if general is not None:
            utf8 = types.PositionEncodingKind.Utf8
            general.position_encodings = [utf8 if utf8 in offered
                                          else types.PositionEncodingKind.Utf16]
        return (yield from super().lsp_initialize(params))

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args):
        if not self.vqedit.over_tcp:
            return (yield from super().lsp_exit(*args))
        # pygls would call sys.exit inside the TCP connection's task, which asyncio reports as
        # an unhandled exception with a traceback; stopping the server ends `start_tcp` instead.
        self.vqedit.exit_code = 0 if self.shut_down else 1
        self.vqedit.shutdown()

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        yield self.fm.features[types.TEXT_DOCUMENT_DID_OPEN], (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        yield self.fm.features[types.TEXT_DOCUMENT_DID_CHANGE], (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        yield self.fm.features[types.TEXT_DOCUMENT_DID_CLOSE], (params,), None


class VqeditServer(LanguageServer):
    def __init__(self, make_backend: Callable[[Callable[[Results], None],
                                               Callable[[Failed], None]], Backend]) -> None:
        super().__init__("vqedit", __version__, protocol_cls=Protocol)
        self.documents = Documents()
        self.settings = Settings()
        self.recorder = Recorder(self.documents)  # the editLog setting
        self.ignored = IgnoredLabels(ignored_path())  # vqedit.ignoreLabel, kept on disk
        self.model = ModelState("loading")
        self._make_backend = make_backend
        self._backend: Backend | None = None
        self._backend_error = "the backend has not started"  # why _backend is None
        self.unknown_rule_labels: frozenset[str] = frozenset()  # last reported, to say it once
        self._backend_thread = ThreadPoolExecutor(1, thread_name_prefix="vqedit-backend")
        self.outbox = Outbox()  # each document's edits waiting for the backend thread
        self._calls_lock = threading.Lock()
        self._calls_waiting = 0  # backend calls submitted and not started
        self.most_calls_waiting = 0  # since the start, for vqedit.stats
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.background_tasks: set[asyncio.Future] = set()  # the loop only holds tasks weakly
        self.over_tcp = False  # serve_tcp: `exit` and signals stop the server, not the process
        self.exit_code = 0  # of `vqedit lsp --tcp`: 1 after an `exit` without `shutdown`

    # --- the backend, on its own thread -------------------------------------------------------

    def start_backend(self) -> None:
        """Called once, at `initialize`, on the event loop."""
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(self._loop_error)
        self.loop.run_in_executor(self._backend_thread, self._create_backend)

    def _create_backend(self) -> None:
        try:
            self._backend = self._make_backend(self._results_from_backend,
                                               self._failure_from_backend)
        except Exception as e:  # e.g. an invalid daemon.toml for --in-process
            self._backend_error = f"cannot start the backend: {e}"
            log.error("%s", self._backend_error)

    def _results_from_backend(self, results: Results) -> None:
        """Any thread: hand results to the event loop (unless it has closed: we are exiting)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.received, results)

    def _failure_from_backend(self, failure: Failed) -> None:
        """Any thread: hand a failed version to the event loop, after the results before it."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.failed, failure)

    def call_backend(self, call: Callable[[Backend], Any]) -> asyncio.Future:
        """`call(backend)` on the backend thread after every call submitted before it."""
        with self._calls_lock:
            self._calls_waiting += 1
            self.most_calls_waiting = max(self.most_calls_waiting, self._calls_waiting)

        def guarded() -> Any:
            with self._calls_lock:
                self._calls_waiting -= 1
            if self._backend is None:
                raise RuntimeError(self._backend_error)
            return call(self._backend)

        return self.loop.run_in_executor(self._backend_thread, guarded)

    def send_open(self, document: Document) -> None:
        """Send the whole (masked) text: on didOpen, recompute and after a failed change."""
        self._cancel_timer(document.uri)
        self.outbox.drop(document.uri)  # the whole text holds those edits
        document.unsent = []
        uri, text, revision, labels = (document.uri, document.masked, document.revision,
                                       self.settings.labels or None)
        self._guarded(lambda backend: backend.open(uri, text, revision, labels), uri)

    def send_changes(self, uri: str) -> None:
        """Send every queued edit of `uri` as one change at its newest revision: they join the
        change already waiting for the backend thread, if one is (outbox.py)."""
        self._timers.pop(uri, None)
        document = self.documents.get(uri)
        if document is None or not document.unsent:
            return
        outgoing = Outgoing(document.unsent, document.revision, document.masked,
                            self.settings.labels or None)
        document.unsent = []
        if not self.outbox.put(uri, outgoing):
            log.debug("%d edits of %s join the waiting change", len(outgoing.edits), uri)
            return

        def change(backend: Backend) -> None:
            if not self.outbox.take(uri, outgoing):  # dropped: sent whole or closed since
                return
            log.debug("sending %d edits of %s at revision %d", len(outgoing.edits), uri,
                      outgoing.revision)
            try:
                backend.change(uri, outgoing.revision, outgoing.edits, outgoing.text)
            except Exception as e:  # the backend's copy differs: give it ours, whole
                log.error("%s: the backend refused revision %d (%s); sending the whole text",
                          uri, outgoing.revision, e)
                backend.open(uri, outgoing.text, outgoing.revision, outgoing.labels)

        self._guarded(change, uri)

    def _guarded(self, call: Callable[[Backend], None], uri: str) -> None:
        def done(future: asyncio.Future) -> None:
            if future.exception() is not None:
                log.error("%s: the backend failed: %s", uri, future.exception())
                self.set_model(ModelState("error", str(future.exception())))

        self.call_backend(call).add_done_callback(done)

    def schedule(self, document: Document) -> None:
        """Send the document's queued edits after `debounceMs` without another change."""
        self._cancel_timer(document.uri)
        if self.settings.debounce_ms == 0:
            self.send_changes(document.uri)
        else:
            self._timers[document.uri] = self.loop.call_later(
                self.settings.debounce_ms / 1000, self.send_changes, document.uri)

    def _cancel_timer(self, uri: str) -> None:
        timer = self._timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

    def close_document(self, uri: str) -> None:
        self._cancel_timer(uri)
        self.outbox.drop(uri)
        if self.documents.close(uri) is not None:
            self._guarded(lambda backend: backend.close(uri), uri)

    # --- results, on the event loop -----------------------------------------------------------

    def received(self, results: Results) -> None:
        """Publish results unless newer ones were; results for a revision the document has
        since left are moved onto its current text (documents.py)."""
        document = self.documents.get(results.uri)
        log.debug("results for %s revision %d (document at %s)", results.uri, results.version,
                  document.revision if document else "closed")
        if document is None or not document.accepts(results):
            return
        document.take(results)
        if self.model.state != "ready":
            self.set_model(ModelState("ready"))
        document.published = results.version
        self.publish_diagnostics(document)
        self.send_status(document)

    def failed(self, failure: Failed) -> None:
        """The backend could not compute a revision: the document's status says so until
        results come again; its diagnostics stay those of the last good results. Logged and
        shown to the user once per run of failures, not once per keystroke that fails again."""
        document = self.documents.get(failure.uri)
        if document is None or failure.version < max(document.published, document.opened):
            return  # for a text the document has left (or a document closed since)
        if document.failure is None:
            message = f"vqedit could not compute {failure.uri}: {failure.message}"
            log.error("%s", message)
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, message))
        else:
            log.debug("%s: failed again: %s", failure.uri, failure.message)
        document.failure = failure
        self.send_status(document)

    def set_model(self, model: ModelState) -> None:
        """A change of the model's state: every open document's status line hears of it."""
        if model == self.model:
            return
        self.model = model
        log.info("model state: %s%s", model.state, f" ({model.message})" if model.message else "")
        for document in list(self.documents.open_documents.values()) or [None]:
            self.send_status(document)

    def relabel(self) -> None:
        """Every open document scored with the `labels` setting (none: the topic head)."""
        labels = self.settings.labels or None
        for uri in self.documents.open_documents:
            self._guarded(lambda backend, uri=uri: backend.set_labels(uri, labels), uri)

    def republish(self) -> None:
        """Diagnostics again for every open document (rules or ignored labels changed)."""
        for document in self.documents.open_documents.values():
            self.publish_diagnostics(document)

    def publish_diagnostics(self, document: Document) -> None:
        """`textDocument/publishDiagnostics` from the newest results (features/diagnostics.py);
        rules naming labels the results lack are reported once per set."""
        found = diagnostics.params(document, self.settings, self.ignored)
        if found is None:
            return
        labels = document.results.scores.keys()
        unknown = diagnostics.unknown_labels(self.settings, labels)
        if unknown and labels and unknown != self.unknown_rule_labels:
            message = (f"vqedit: rules name labels that are not in use: "
                       f"{', '.join(sorted(unknown))} (labels: {', '.join(labels)})")
            log.warning("%s", message)
            self.window_show_message(types.ShowMessageParams(types.MessageType.Warning, message))
        self.unknown_rule_labels = unknown
        self.text_document_publish_diagnostics(found)

    def send_status(self, document: Document | None) -> None:
        """`vqedit/status` for a document, or for none (features/status.py)."""
        self.protocol.notify(status.METHOD, status.params(document, self.model))

    def serve_tcp(self, host: str, port: int) -> None:
        """One client on TCP, until it disconnects or sends `exit`, or SIGINT/SIGTERM."""
        self.over_tcp = True
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._stop_on_signal)
        self.start_tcp(host, port)

    def _stop_on_signal(self, number: int, frame: Any) -> None:
        """Stop serving, so `start_tcp` returns normally (a KeyboardInterrupt would end it with
        a traceback from inside asyncio)."""
        log.info("%s: stopping", signal.Signals(number).name)
        try:
            loop = asyncio.get_running_loop()  # the handler runs on the loop's thread
        except RuntimeError:  # not serving yet
            raise SystemExit(0) from None
        loop.set_exception_handler(self._loop_error)
        loop.call_soon_threadsafe(self.shutdown)  # wakes the loop, unlike a direct call

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's error report, less two ends of a TCP session that are not errors.
        - The client's connection task may still be reading when the loop stops; asyncio then
          cancels it and its stream callback reports the cancellation.
        - A client may go with our messages unread, so its connection ends in a reset, not an
          end of file: pygls's reading task then fails and it never stops serving, so we do."""
        error = context.get("exception")
        if isinstance(error, asyncio.CancelledError):
            return
        if self.over_tcp and isinstance(error, ConnectionError):
            log.info("the client's connection ended: %s", error)
            self.shutdown()
            return
        loop.default_exception_handler(context)

    def stop_backend(self) -> None:
        if self._backend is not None:
            self._backend.stop()
        self._backend_thread.shutdown(wait=False)


LOG_LEVELS = {logging.ERROR: types.MessageType.Error, logging.WARNING: types.MessageType.Warning,
              logging.INFO: types.MessageType.Info, logging.DEBUG: types.MessageType.Log}


class ClientLog(logging.Handler):
    """Our log records also go to the editor as `window/logMessage` (its LSP log)."""

    def __init__(self, server: VqeditServer) -> None:
        super().__init__(logging.INFO)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        loop = self.server.loop
        if loop is None:
            return
        params = types.LogMessageParams(LOG_LEVELS.get(record.levelno, types.MessageType.Error),
                                        self.format(record))
        with contextlib.suppress(RuntimeError):  # the loop closed: the client is gone
            loop.call_soon_threadsafe(self.server.window_log_message, params)
