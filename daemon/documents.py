"""The daemon's open documents: one entry per (session, uri) holding the one checked copy of its
text on the daemon side, and the results computed from a live document.

An entry's fields above `live` are guarded by the worker's lock (`worker.py`); `live` and
`live_version` belong to the worker thread.
"""

from dataclasses import dataclass, field

from vqedit.engine.heads import LinearHead
from vqedit.engine.live import LiveDocument
from vqedit.text.edit import Edit, EditError, apply_all

from .protocol import Cost, ErrorCode, LabelDescriptions, Paragraph, ProtocolError, Results

Key = tuple[int, str]  # (session, uri): each editor connection has its own documents


@dataclass
class Entry:
    """One open document. Fields above `live` are guarded by the worker's lock."""

    key: Key
    text: str  # the newest accepted text; once computed, the same object as `live.text`
    version: int  # its version
    labels: LabelDescriptions | None = None  # zero-shot labels scoring it; None: the head
    pending: list[Edit] = field(default_factory=list)  # accepted, not yet applied by the worker
    pending_versions: int = 0  # how many versions `pending` spans (for the superseded count)
    snapshot: Results | None = None  # immutable results of the newest computed version
    state_bytes: int = 0  # memory of `live`'s segment states in memory
    needs_compaction: bool = False  # edited since the last compaction (idle work to do)
    closed: bool = False  # closed while the worker held it: its work is dropped
    live: LiveDocument | None = None  # worker only: None before the first pass or after the
    # model was unloaded or reloaded, then rebuilt from `text`; the budget evicts its segments
    live_version: int = -1  # worker only: the version `live` holds

    def accept(self, version: int, edits: list[Edit]) -> None:
        """Take edits for a newer version, checked against the text: the only check an edit
        gets in the daemon before the engine applies it. ProtocolError, changing nothing, if
        the version is not newer or an edit does not fit."""
        if version <= self.version:
            raise ProtocolError(ErrorCode.STALE_VERSION,
                                f"version {version} is not above the document's {self.version}")
        try:
            text = apply_all(self.text, edits)
        except EditError as e:
            raise ProtocolError(ErrorCode.EDIT_OUT_OF_RANGE, str(e)) from None
        self.text, self.version = text, version
        self.pending.extend(edits)
        self.pending_versions += 1

    def drop_state(self) -> None:
        """Forget the model state (unload, reload, a failed pass): rebuilt from `text` later."""
        self.live, self.live_version, self.state_bytes = None, -1, 0


def results_of(head: LinearHead, uri: str, version: int, live: LiveDocument, exact: bool,
               cost: Cost | None = None) -> Results:
    """A document's results from its live state (also what `vqedit replay` reports)."""
    if not live.document.segments:
        return Results(uri, version, None, {}, [], exact, cost)
    document = head.classify(live.embedding())
    tokens, paragraphs = live.document.tokens, []
    for segment, (label, score) in zip(live.document.segments,
                                       head.best(live.segment_embeddings()), strict=True):
        if segment.end > segment.start:
            paragraphs.append(Paragraph(tokens.starts[segment.start],
                                        tokens.ends[segment.end - 1], label, score))
    return Results(uri, version, document.label, document.scores, paragraphs, exact, cost)
