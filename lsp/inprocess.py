"""`vqedit lsp --in-process`: the daemon's scheduler inside the server, no daemon process.

The same `Backend` interface as `DaemonBackend` (backend.py), built on
`vqedit.daemon.scheduler.Scheduler`: its worker thread loads the model (the daemon's settings:
defaults, then `daemon.toml`) and computes results, which it hands to `on_results` (and versions
it could not compute to `on_failed`). This is the
one module of `lsp/` that reaches the engine, and only through the scheduler.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from vqedit.daemon.paths import Paths
from vqedit.daemon.protocol import Failed, Results
from vqedit.daemon.scheduler import Scheduler
from vqedit.daemon.settings import resolve
from vqedit.text.edit import Edit

from .backend import Labels, ModelState

SESSION = 0  # the scheduler keys documents by (session, uri); the server is one session


class InProcessBackend:
    def __init__(self, on_results: Callable[[Results], None],
                 on_failed: Callable[[Failed], None]) -> None:
        settings = resolve(Paths.default().config, {})

        def publish(session: int, message: Results | Failed) -> None:
            (on_results if isinstance(message, Results) else on_failed)(message)

        self.scheduler = Scheduler(settings, publish)
        self.scheduler.start()

    def open(self, uri: str, text: str, version: int, labels: Labels) -> None:
        self.scheduler.open((SESSION, uri), text, version, labels)

    def change(self, uri: str, version: int, edits: list[Edit]) -> None:
        self.scheduler.change((SESSION, uri), version, [e for e in edits])

    def close(self, uri: str) -> None:
        self.scheduler.close((SESSION, uri))

    def set_labels(self, uri: str, labels: Labels) -> None:
        self.scheduler.set_labels((SESSION, uri), labels)

    def model_state(self) -> ModelState:
        if self.scheduler.model is not None:
            return ModelState("ready")
        if self.scheduler.model_error is not None:
            return ModelState("error", self.scheduler.model_error)
        return ModelState("loading")

    def stats(self) -> dict[str, Any]:
        documents, resident, state_bytes = self.scheduler.document_count()
        model = self.scheduler.model
        return {"in_process": True, "model": model.name if model else None,
                "model_error": self.scheduler.model_error,
                "mode": self.scheduler.settings.mode_name, "documents": documents,
                "resident_documents": resident, "state_mb": round(state_bytes / 2**20, 3),
                **dataclasses.asdict(self.scheduler.counters)}

    def stop(self) -> None:
        self.scheduler.stop()
