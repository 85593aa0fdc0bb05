"""Edit logs: what happened to documents in an editor, one JSON object per line.

Usage:

    from vqedit.lsp import editlog

    with editlog.Writer(path) as log:  # appends; one flushed line per record
        log.write(editlog.Open(time.time(), "file:///a.md", 1, "Some prose.", "utf-16"))
        log.write(editlog.Change(time.time(), "file:///a.md", 2,
                                 (editlog.Content("more ", editlog.Range.at(0, 5)),)))
    loaded = editlog.read(path, skip_bad=False)  # raises LogError naming the line
    for step in loaded.steps:
        step.record, step.edits  # the record, and its changes as code-point `Edit`s

A record is `open` (the whole text, the version and the position encoding), `change` (the LSP
content changes of one `didChange`: range + text, or the whole text) or `close`.
`docs/edit-log.md` describes the format; `edit-log.schema.json` beside this file is its JSON
Schema, which `parse_line` checks every record against.

The language server records logs with it and the command line synthesises and replays them
(`cli/` may import every layer). It knows no LSP library, so tools load it without pygls:
positions are plain (line, character) pairs counted in the code units of the encoding the
`open` record names, and a change resolves to the daemon's code-point edits (`Edit`).
"""

import json
import re
import threading
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from vqedit.text.edit import Edit
from vqedit.text.lines import LONE_SURROGATE

ENCODINGS = ("utf-16", "utf-8", "utf-32")
# LSP's line ends: a position's line counts these, and its character never points inside one.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
# A JSON escape of a surrogate, paired or not: lines without one need no closer look.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class LogError(ValueError):
    """A record that cannot be used; `line` is its 1-based line number in the log."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.reason = message


@dataclass(frozen=True)
class Position:
    line: int  # 0-based
    character: int  # 0-based, in code units of the document's encoding


@dataclass(frozen=True)
class Range:
    start: Position
    end: Position

    @classmethod
    def at(cls, line: int, character: int) -> "Range":
        """An empty range: where an insertion goes."""
        return cls(Position(line, character), Position(line, character))


@dataclass(frozen=True)
class Content:
    """One LSP content change: `text` replaces `range`, or the whole text when range is None."""

    text: str
    range: Range | None = None


@dataclass(frozen=True)
class Open:
    time: float  # seconds since the Unix epoch
    uri: str
    version: int
    text: str  # the whole text when it was opened
    encoding: str = "utf-16"  # how positions in this document's changes count characters
    language: str | None = None  # the LSP languageId, when known ("markdown", "plaintext")


@dataclass(frozen=True)
class Change:
    time: float
    uri: str
    version: int  # the document's version after these changes; strictly increasing
    changes: tuple[Content, ...]  # applied in order, each to the text the previous one left


@dataclass(frozen=True)
class Close:
    time: float
    uri: str


Record = Open | Change | Close


# --- JSON -----------------------------------------------------------------------------------

def to_json(record: Record) -> dict[str, Any]:
    if isinstance(record, Open):
        value = {"kind": "open", "time": record.time, "uri": record.uri,
                 "version": record.version, "text": record.text, "encoding": record.encoding}
        if record.language is not None:
            value["languageId"] = record.language
        return value
    if isinstance(record, Change):
        return {"kind": "change", "time": record.time, "uri": record.uri,
                "version": record.version, "changes": [_content_json(c) for c in record.changes]}
    return {"kind": "close", "time": record.time, "uri": record.uri}


def dumps(record: Record) -> str:
    """One line of a log (without its line break)."""
    return json.dumps(to_json(record), ensure_ascii=False, separators=(",", ":"))


def parse_line(line: str, number: int) -> Record:
    """A record from one line of a log; LogError (naming `number`) if it is not a valid one."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        raise LogError(number, f"not valid JSON ({e.msg}, column {e.colno})") from None
    except RecursionError:
        raise LogError(number, "JSON nested too deeply to be a record") from None
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind not in ("open", "change", "close"):
        raise LogError(number, f"a record is an object whose kind is open, change or close; "
                               f"got {_short(value)}")
    try:
        error = jsonschema.exceptions.best_match(_validators()[kind].iter_errors(value))
    except RecursionError:
        raise LogError(number, f"a {kind} record nested too deeply") from None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise LogError(number, f"invalid {kind} record{f' at {where}' if where else ''}: "
                               f"{error.message}")
    surrogate = SURROGATE_ESCAPE.search(line) and _lone_surrogate(value)
    if surrogate:
        raise LogError(number, f"{surrogate} holds a lone surrogate (an escape such as \\ud800 "
                               "that is half of a character), which no editor's text can hold")
    if kind == "open":
        return Open(value["time"], value["uri"], value["version"], value["text"],
                    value["encoding"], value.get("languageId"))
    if kind == "change":
        return Change(value["time"], value["uri"], value["version"],
                      tuple(_content(c) for c in value["changes"]))
    return Close(value["time"], value["uri"])


def _lone_surrogate(value: dict[str, Any]) -> str | None:
    """Which text of a valid record holds a lone surrogate, if one does."""
    texts = {"uri": value["uri"], "text": value.get("text", "")}
    texts.update({f"changes/{i}/text": c["text"] for i, c in enumerate(value.get("changes", []))})
    return next((name for name, text in texts.items() if LONE_SURROGATE.search(text)), None)


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("edit-log.schema.json").read_text())


@cache
def _validators() -> dict[str, jsonschema.protocols.Validator]:
    """One validator per record kind, so an error names what is wrong with *that* kind."""
    defs = schema()["$defs"]
    return {kind: jsonschema.Draft202012Validator({"$ref": f"#/$defs/{kind}", "$defs": defs})
            for kind in ("open", "change", "close")}


def _content_json(content: Content) -> dict[str, Any]:
    if content.range is None:
        return {"text": content.text}
    r = content.range
    return {"range": {"start": {"line": r.start.line, "character": r.start.character},
                      "end": {"line": r.end.line, "character": r.end.character}},
            "text": content.text}


def _content(value: dict[str, Any]) -> Content:
    r = value.get("range")
    if r is None:
        return Content(value["text"])
    return Content(value["text"], Range(Position(**r["start"]), Position(**r["end"])))


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


# --- positions ------------------------------------------------------------------------------

def _units(text: str, encoding: str) -> int:
    if encoding == "utf-16":
        return len(text) + sum(ord(c) > 0xFFFF for c in text)
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text)


def _lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line in code points, line breaks excluded."""
    spans, start = [], 0
    for match in _LINE_BREAK.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return spans


def to_offset(text: str, position: Position, encoding: str,
              lines: list[tuple[int, int]] | None = None) -> int:
    """The code-point offset of an LSP position; ValueError if it is outside the text."""
    lines = lines or _lines(text)
    if position.line >= len(lines):
        raise ValueError(f"line {position.line} is past the end of a text of {len(lines)} "
                         f"lines")
    start, end = lines[position.line]
    units = 0
    for offset in range(start, end):
        if units == position.character:
            return offset
        units += _units(text[offset], encoding)
        if units > position.character:
            raise ValueError(f"character {position.character} of line {position.line} falls "
                             f"inside a character ({encoding})")
    if units == position.character:
        return end
    raise ValueError(f"character {position.character} is past the end of line {position.line}, "
                     f"which has {units} {encoding} code units")


def to_position(text: str, offset: int, encoding: str) -> Position:
    """The LSP position of a code-point offset (which must not split a CRLF)."""
    if not 0 <= offset <= len(text):
        raise ValueError(f"offset {offset} is outside a text of {len(text)} characters")
    for line, (start, end) in enumerate(_lines(text)):
        if start <= offset <= end:
            return Position(line, _units(text[start:offset], encoding))
    raise ValueError(f"offset {offset} falls inside a line break")


def content_for(text: str, edit: Edit, encoding: str) -> Content:
    """The LSP content change that makes `edit` to `text`."""
    return Content(edit.text, Range(to_position(text, edit.start, encoding),
                                    to_position(text, edit.end, encoding)))


# --- reading a whole log --------------------------------------------------------------------

@dataclass
class _Document:
    text: str
    version: int
    encoding: str


@dataclass(frozen=True)
class Step:
    line: int  # where the record is in the log, 1-based
    record: Record
    edits: tuple[Edit, ...] = ()  # a change's contents in code points, in order
    text: str = ""  # the document's text after this record (empty after a close)


@dataclass
class Timeline:
    """Every document's text and version as the records go by; refuses records that misfit.

    `apply` either accepts a record whole or raises LogError and changes nothing, so a caller
    that skips bad records keeps a consistent text.
    """

    documents: dict[str, _Document] = field(default_factory=dict)

    def apply(self, record: Record, line: int) -> Step:
        doc = self.documents.get(record.uri)
        if isinstance(record, Open):
            if doc is not None:
                raise LogError(line, f"{record.uri} is opened again without a close")
            self.documents[record.uri] = _Document(record.text, record.version, record.encoding)
            return Step(line, record, text=record.text)
        if doc is None:
            raise LogError(line, f"{record.uri} is not open (no open record before this line)")
        if isinstance(record, Close):
            del self.documents[record.uri]
            return Step(line, record)
        if record.version <= doc.version:
            raise LogError(line, f"version {record.version} of {record.uri} goes backwards: the "
                                 f"document is already at version {doc.version}")
        text, edits = doc.text, []
        for index, content in enumerate(record.changes):
            try:
                edit = self._offsets(text, content, doc.encoding)
            except ValueError as e:
                raise LogError(line, f"change {index} is out of range: {e}") from None
            text = edit.applied(text)
            edits.append(edit)
        doc.text, doc.version = text, record.version
        return Step(line, record, tuple(edits), text)

    @staticmethod
    def _offsets(text: str, content: Content, encoding: str) -> Edit:
        if content.range is None:
            return Edit(0, len(text), content.text)
        lines = _lines(text)
        start = to_offset(text, content.range.start, encoding, lines)
        end = to_offset(text, content.range.end, encoding, lines)
        if end < start:
            raise ValueError(f"the range ends ({content.range.end}) before it starts "
                             f"({content.range.start})")
        return Edit(start, end, content.text)


@dataclass
class Loaded:
    steps: list[Step]  # the usable records, in order
    bad: list[LogError]  # the records skipped (only with skip_bad)
    uris: list[str]  # every document the log opens, in order of first appearance


def read(path: Path, skip_bad: bool = False) -> Loaded:
    """Parse and check a whole log. Raises LogError at the first bad record unless skip_bad.

    Blank lines are ignored. A last line without its line break that is not valid JSON is
    reported as truncated (the writer was killed mid-record).
    """
    raw = path.read_text(encoding="utf-8")
    lines = raw.split("\n")
    complete = raw.endswith("\n")
    timeline, steps, bad, uris = Timeline(), [], [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            try:
                record = parse_line(line, number)
            except LogError as e:
                if number == len(lines) and not complete:
                    raise LogError(number, f"the last line is truncated ({e.reason})") from None
                raise
            steps.append(timeline.apply(record, number))
            uris.setdefault(record.uri, None)
        except LogError as e:
            if not skip_bad:
                raise
            bad.append(e)
    return Loaded(steps, bad, list(uris))


class Writer:
    """Appends records to a log, one flushed line each, so a crash loses at most the last line.

    Thread-safe: the language server may record from more than one thread.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: Record) -> None:
        with self._lock:
            self._file.write(dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
