"""The `editLog` setting: every opened document, accepted change and close, appended to an edit
log (docs/edit-log.md) that `vqedit replay` can run again.

A change is recorded as the client sent it, in the negotiated position encoding, when it fits
the text the recorder has; one the server had to repair (a range past the end, a version not
above the last) is recorded as the text the server made of it (a whole-text change), or left
out when its version cannot follow the last, so a log the server writes always replays. Used on
the event loop only.
"""

import logging
import time
from pathlib import Path

from lsprotocol import types

from vqedit.lsp import editlog

from .documents import Document, Documents

log = logging.getLogger("vqedit.lsp")


class Recorder:
    def __init__(self, documents: Documents) -> None:
        self.documents = documents  # the server's, for the negotiated encoding and open texts
        self.path = ""  # the `editLog` setting; empty: off
        self._writer: editlog.Writer | None = None
        self._timeline = editlog.Timeline()  # what the log says each document holds
        self._line = 0  # records written, for the timeline's messages

    def configure(self, path: str) -> None:
        """Start (or stop, for "") recording to `path`; documents open now are recorded as
        opened now, so the log is complete from here on."""
        if path == self.path:
            return
        self.close()
        self.path = path
        if not path:
            return
        try:
            self._writer = editlog.Writer(Path(path).expanduser())
        except OSError as e:
            log.error("editLog: cannot append to %s (%s); not recording", path, e)
            self.path = ""
            return
        log.info("recording edits to %s", path)
        for document in self.documents.open_documents.values():
            self.opened(document)

    def opened(self, document: Document) -> None:
        encoding = self.documents.encoding
        self._write(editlog.Open(time.time(), document.uri, document.version, document.text,
                                 str(getattr(encoding, "value", encoding)), document.language))

    def changed(self, document: Document, version: int,
                changes: list[types.TextDocumentContentChangeEvent]) -> None:
        """After the server applied a didChange to `document` (whose text is now the result)."""
        if self._writer is None:
            return
        now = time.time()
        self._write(editlog.Change(now, document.uri, version, tuple(map(_content, changes))),
                    editlog.Change(now, document.uri, version, (editlog.Content(document.text),)))

    def closed(self, uri: str) -> None:
        self._write(editlog.Close(time.time(), uri))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer, self._timeline, self.path = None, editlog.Timeline(), ""

    def _write(self, *candidates: editlog.Record) -> None:
        """Write the first candidate that fits the log so far; log why none did."""
        if self._writer is None:
            return
        for record in candidates:
            try:
                self._timeline.apply(record, self._line + 1)
            except editlog.LogError as e:
                problem = e
                continue
            self._writer.write(record)
            self._line += 1
            return
        log.error("editLog: not recorded: %s", problem)


def _content(change: types.TextDocumentContentChangeEvent) -> editlog.Content:
    if isinstance(change, types.TextDocumentContentChangePartial):
        start, end = change.range.start, change.range.end
        return editlog.Content(change.text, editlog.Range(
            editlog.Position(start.line, start.character),
            editlog.Position(end.line, end.character)))
    return editlog.Content(change.text)
