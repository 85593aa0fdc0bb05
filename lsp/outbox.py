"""Backend changes not yet started: at most one per document, shared by two threads.

The event loop puts a document's debounced edits here and queues a backend job only when none
of that document is waiting; the job takes them when it starts on the backend thread. While a
job waits (the daemon is slow, or stopped answering), later edits join it instead of queuing
another job with another copy of the text, so what waits grows with the number of open
documents, never with keystrokes. Edits keep their order and the revision only goes up, since
one waiting change holds them all and is sent after every job queued before it.
"""

import threading
from dataclasses import dataclass

from vqedit.daemon.protocol import LabelDescriptions
from vqedit.text.edit import Edit


@dataclass
class Outgoing:
    """One backend `change` waiting to start: every edit of the document not yet sent."""

    edits: list[Edit]  # of the masked text, in order
    revision: int  # the newest, the change's version
    text: str  # the masked text at `revision`: sent whole if the backend refuses the edits
    labels: LabelDescriptions | None  # for that whole text


class Outbox:
    """The waiting change of each document. `put` and `drop` on the event loop, `take` on the
    backend thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, Outgoing] = {}

    def put(self, uri: str, outgoing: Outgoing) -> bool:
        """Add `outgoing` to the change waiting for `uri`; True if none waited, so the caller
        queues a job that will `take` it."""
        with self._lock:
            waiting = self._waiting.get(uri)
            if waiting is None:
                self._waiting[uri] = outgoing
                return True
            waiting.edits.extend(outgoing.edits)
            waiting.revision, waiting.text, waiting.labels = (outgoing.revision, outgoing.text,
                                                              outgoing.labels)
            return False

    def take(self, uri: str, outgoing: Outgoing) -> bool:
        """Whether `outgoing`, which a job queued, is still to be sent; it is no longer waiting
        (later edits start a new change). False if it was dropped: a job queued before a close
        must not send the edits of the document opened again after it."""
        with self._lock:
            if self._waiting.get(uri) is not outgoing:
                return False
            del self._waiting[uri]
            return True

    def drop(self, uri: str) -> None:
        """Forget the change waiting for `uri`: the document is sent whole, or closed."""
        with self._lock:
            self._waiting.pop(uri, None)

    def edits_waiting(self) -> int:
        with self._lock:
            return sum(len(outgoing.edits) for outgoing in self._waiting.values())
