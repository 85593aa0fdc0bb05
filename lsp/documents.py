"""The server's own copy of every open document, and the one place every change passes through.

pygls applies a change to its workspace copy before our handler runs, so that copy cannot say
what the text was before; the server therefore keeps its own text per document and never reads
pygls's. `Documents.change` is where every accepted `didChange` goes: it converts positions
(in the negotiated encoding) to code points, applies the edits, masks Markdown, queues the
edits for the backend and keeps them to move older results with. A hook that wants
every accepted change (an edit log) belongs there.

Revisions: the backend is sent the server's own counter, `revision`, which increases with every
text the server accepts, whatever version numbers the client sends, and is never reused (not
even by a document closed and opened again, whose old results may still be on their way).

Results for a revision the document has since left are not thrown away: when keystrokes come
faster than results, every result is for such a revision, and withholding them showed nothing
until the user paused. `Document.paragraphs` moves their paragraphs through the edits made
since (kept in `edits`, on the masked text, whose offsets are the text's), and drops a
paragraph that a later edit replaced or inserted text inside: its label was computed for words
it no longer has. An insertion at either end of a paragraph leaves its text, and its results,
as they were. So every range fits the text the client has now, and diagnostics are published
with the current version (diagnostics.py says why not the older one).

A lone surrogate (half of a UTF-16 pair, which JSON can carry and a broken client may send)
becomes U+FFFD on the way in: it cannot be encoded to go to the daemon, and a replacement
character takes the same one code unit, so every later position still means the same place.

Those edits are dropped once results newer than them arrive; while none arrive (a daemon that
never answers) at most `KEPT_EDITS` are kept. Past that the oldest go, and with them every
result that would need them to be moved (`Document.movable`): the results held are dropped and
older ones arriving later are refused, so the server waits for fresh ones instead.
"""

import itertools
import logging
from dataclasses import dataclass, field, replace

from lsprotocol import types

from vqedit.daemon.protocol import Failed, Paragraph, Results
from vqedit.text import markdown
from vqedit.text.edit import Edit, moved
from vqedit.text.lines import LONE_SURROGATE, LineIndex

log = logging.getLogger("vqedit.lsp")

KEPT_EDITS = 1000  # edits kept per document to move older results through: a few minutes of
# typing ahead of the daemon, and the moving of every paragraph stays cheap


@dataclass
class Document:
    uri: str
    language: str  # the client's languageId; "markdown" gets its code masked
    version: int  # the client's version of `text`
    text: str
    lines: LineIndex  # positions ↔ offsets of `text`
    masked: str  # what the backend holds: `text` with Markdown code blanked, same length
    revision: int  # the server's counter of accepted texts, sent to the backend as version
    unsent: list[Edit] = field(default_factory=list)  # edits of `masked` not yet sent
    results: Results | None = None  # the newest results received, maybe for an older revision
    published: int = -1  # the revision of the results last published
    opened: int = 0  # the revision it was opened at: results older than that are for a
    # document of the same uri closed before
    edits: list[tuple[int, Edit]] = field(default_factory=list)  # (the revision it was
    # made at, the edit of `masked`) since the revision of `results`
    versions: dict[int, int] = field(default_factory=dict)  # the client's version of each
    # revision since that of `results`
    results_version: int | None = None  # the client's version `results` were computed for
    movable: int = 0  # results for an older revision cannot be moved: their edits were dropped
    failure: Failed | None = None  # the backend could not compute this revision or a later
    # one than `results`: the status shows it until results for it (or newer) arrive

    def range(self, start: int, end: int) -> types.Range:
        """The LSP range of code-point offsets [start, end) of `text`."""
        (a, b), (c, d) = self.lines.position(start), self.lines.position(end)
        return types.Range(start=types.Position(a, b), end=types.Position(c, d))

    def accepts(self, results: Results) -> bool:
        """Whether `results` are newer than those published and can be moved onto the text."""
        return results.version >= max(self.published, self.opened, self.movable)

    def paragraphs(self, results: Results) -> list[Paragraph]:
        """The paragraphs of `results` on the current text, less those edited since."""
        later = [edit for revision, edit in self.edits if revision >= results.version]
        return [replace(paragraph, start=span[0], end=span[1]) for paragraph in results.paragraphs
                if (span := moved(paragraph.start, paragraph.end, later)) is not None]

    def take(self, results: Results) -> None:
        """Keep `results` as the newest; edits made before their revision are not needed."""
        self.results = results
        self.results_version = self.versions.get(results.version)
        if self.failure is not None and results.version >= self.failure.version:
            self.failure = None
        self.edits = [(revision, edit) for revision, edit in self.edits
                      if revision >= results.version]
        self.versions = {revision: version for revision, version in self.versions.items()
                         if revision >= results.version}

    def forget(self, revision: int) -> None:
        """Drop the edits made before `revision`, and the results that needed them."""
        self.movable = revision
        self.edits = [(made, edit) for made, edit in self.edits if made >= revision]
        self.versions = {made: version for made, version in self.versions.items()
                         if made >= revision}
        if self.results is not None and self.results.version < revision:
            self.results, self.results_version = None, None


class Documents:
    """Open documents by uri. Used on the event loop only."""

    def __init__(self, kept_edits: int = KEPT_EDITS) -> None:
        self.kept_edits = kept_edits
        self.open_documents: dict[str, Document] = {}
        self.encoding = types.PositionEncodingKind.Utf16  # set at initialize
        self._revisions = itertools.count(1)  # one counter for all documents: never reused

    def get(self, uri: str) -> Document | None:
        return self.open_documents.get(uri)

    def open(self, item: types.TextDocumentItem) -> Document:
        revision = next(self._revisions)
        text = _whole(item.text)
        document = Document(item.uri, item.language_id, item.version, text,
                            LineIndex(text, self.encoding), _masked(item.language_id, text),
                            revision, opened=revision, versions={revision: item.version})
        self.open_documents[item.uri] = document
        return document

    def renew(self, document: Document) -> None:
        """A new revision of the same text: it is recomputed from scratch."""
        document.revision = next(self._revisions)
        document.versions[document.revision] = document.version

    def close(self, uri: str) -> Document | None:
        return self.open_documents.pop(uri, None)

    def change(self, document: Document, version: int,
               changes: list[types.TextDocumentContentChangeEvent]) -> None:
        """Apply a `didChange` to our copy; problems are logged, positions clamped (`LineIndex`)."""
        if version <= document.version:
            log.error("%s: version %d is not above %d; applying the change anyway",
                      document.uri, version, document.version)
        for change in changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                start = document.lines.offset(change.range.start.line,
                                              change.range.start.character)
                end = document.lines.offset(change.range.end.line, change.range.end.character)
                for problem in (start.problem, end.problem):
                    if problem:
                        log.error("%s: %s", document.uri, problem)
                begin, stop = sorted((start.offset, end.offset))
                if begin != start.offset:
                    log.error("%s: a range ends before it starts; using it reversed",
                              document.uri)
            else:
                begin, stop = 0, len(document.text)
            self._replace(document, Edit(begin, stop, _whole(change.text)))
        document.version = version
        document.revision = next(self._revisions)
        document.versions[document.revision] = version

    def _replace(self, document: Document, edit: Edit) -> None:
        """Make `edit` to the document's text and queue the masked difference."""
        lines = document.lines.edited(edit)
        text = lines.text
        masked = (markdown.remask(document.text, document.masked, edit)
                  if document.language == "markdown" else text)
        edit = Edit.between(document.masked, masked)
        document.unsent.append(edit)
        document.edits.append((document.revision, edit))
        if len(document.edits) > self.kept_edits:
            # Results from before the oldest edit kept could no longer be moved.
            document.forget(document.edits[-self.kept_edits - 1][0] + 1)
        document.text, document.masked, document.lines = text, masked, lines


def _whole(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (one code unit, as it was)."""
    return LONE_SURROGATE.sub("\ufffd", text) if LONE_SURROGATE.search(text) else text


def _masked(language: str, text: str) -> str:
    return markdown.mask(text) if language == "markdown" else text
