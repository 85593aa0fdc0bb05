"""Where results come from: one interface, two implementations.

`Backend` is all the server knows: open, change, close, zero-shot labels, stats, the model's
state, and callbacks for results and for versions that could not be computed (`Failed`).
`DaemonBackend` forwards to the per-user daemon through `vqedit.daemon.client.DaemonClient`
(which starts the daemon when none runs);
`inprocess.InProcessBackend` (`vqedit lsp --in-process`) runs the daemon's worker inside the
server. Offsets are code points and versions are the server's revisions (documents.py).

Threads: the server calls every method but `stop` from one thread of its own, in order, so a
slow call (the first one may start the daemon) never blocks the editor; `on_results` and
`on_failed` may be called from any thread, each document's in the order the backend made them.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vqedit.daemon.client import DaemonClient, DaemonError
from vqedit.daemon.protocol import Failed, LabelDescriptions, Results
from vqedit.text.edit import Edit

log = logging.getLogger("vqedit.lsp")


@dataclass(frozen=True)
class ModelState:
    state: str  # "loading", "ready" or "error", as in the vqedit/status notification
    message: str | None = None  # why, for "error"




class Backend(Protocol):
    def open(self, uri: str, text: str, version: int, labels: LabelDescriptions | None) -> None:
        """Open or reopen (from scratch) a document; its results follow through `on_results`
        (or, if it cannot be computed, a `Failed` through `on_failed`)."""

    def change(self, uri: str, version: int, edits: list[Edit], text: str) -> None:
        """Apply edits (code points, in order) for a newer version; `text` is what they lead
        to, the server's own copy."""

    def close(self, uri: str) -> None: ...

    def set_labels(self, uri: str, labels: LabelDescriptions | None) -> None:
        """Score the document with other labels; its results are pushed again."""

    def model_state(self) -> ModelState: ...

    def stats(self) -> dict[str, Any]: ...

    def stop(self) -> None: ...


class DaemonBackend:
    """The per-user daemon, started when none runs; it outlives this server."""

    def __init__(self, on_results: Callable[[Results], None],
                 on_failed: Callable[[Failed], None]) -> None:
        self.client = DaemonClient(on_results=on_results, on_failed=on_failed, recover=True)

    def open(self, uri: str, text: str, version: int, labels: LabelDescriptions | None) -> None:
        self.client.open(uri, text, version, labels)

    def change(self, uri: str, version: int, edits: list[Edit], text: str) -> None:
        self.client.change(uri, version, edits, after=text)

    def close(self, uri: str) -> None:
        self.client.close(uri)

    def set_labels(self, uri: str, labels: LabelDescriptions | None) -> None:
        self.client.set_labels(uri, labels)

    def model_state(self) -> ModelState:
        try:
            stats = self.client.stats()
        except (DaemonError, ConnectionError, OSError) as e:
            return ModelState("error", f"the daemon is unreachable: {e}")
        if stats["model"] is not None:
            return ModelState("ready")
        if stats["model_error"] is not None:
            return ModelState("error", stats["model_error"])
        return ModelState("loading")

    def stats(self) -> dict[str, Any]:
        return self.client.stats()

    def stop(self) -> None:
        self.client.disconnect()
