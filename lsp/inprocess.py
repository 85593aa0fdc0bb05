"""`vqedit lsp --in-process`: the daemon's worker inside the server, no daemon process.

The same `Backend` interface as `DaemonBackend` (backend.py), built on
`vqedit.daemon.worker.Worker`: its thread loads the model (the daemon's settings:
defaults, then `daemon.toml`) and computes results, which it hands to `on_results` (and versions
it could not compute to `on_failed`). This is the
one module of `lsp/` that reaches the engine, and only through the worker.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from vqedit.daemon.paths import Paths
from vqedit.daemon.protocol import Failed, LabelDescriptions, Results
from vqedit.daemon.settings import resolve
from vqedit.daemon.worker import Worker
from vqedit.text.edit import Edit

from .backend import ModelState

SESSION = 0  # the worker keys documents by (session, uri); the server is one session


class InProcessBackend:
    def __init__(self, on_results: Callable[[Results], None],
                 on_failed: Callable[[Failed], None]) -> None:
        settings = resolve(Paths.default().config, {})

        def publish(session: int, message: Results | Failed) -> None:
            (on_results if isinstance(message, Results) else on_failed)(message)

        self.worker = Worker(settings, publish)
        self.worker.start()

    def open(self, uri: str, text: str, version: int, labels: LabelDescriptions | None) -> None:
        self.worker.open((SESSION, uri), text, version, labels)

    def change(self, uri: str, version: int, edits: list[Edit], text: str) -> None:
        self.worker.change((SESSION, uri), version, list(edits))  # checked there, once

    def close(self, uri: str) -> None:
        self.worker.close((SESSION, uri))

    def set_labels(self, uri: str, labels: LabelDescriptions | None) -> None:
        self.worker.set_labels((SESSION, uri), labels)

    def model_state(self) -> ModelState:
        if self.worker.models.model is not None:
            return ModelState("ready")
        if self.worker.models.error is not None:
            return ModelState("error", self.worker.models.error)
        return ModelState("loading")

    def stats(self) -> dict[str, Any]:
        documents, resident, state_bytes = self.worker.document_count()
        model = self.worker.models.model
        return {"in_process": True, "model": model.name if model else None,
                "model_error": self.worker.models.error,
                "mode": self.worker.settings.mode_name, "documents": documents,
                "resident_documents": resident, "state_mb": round(state_bytes / 2**20, 3),
                **dataclasses.asdict(self.worker.counters)}

    def stop(self) -> None:
        self.worker.stop()
