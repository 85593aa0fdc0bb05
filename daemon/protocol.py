"""The daemon's wire protocol: length-prefixed msgpack frames and the messages they carry.

This is the only module that knows msgpack (tests/test_layers.py checks it). A frame is a 4-byte
big-endian length followed by that many bytes of msgpack. Messages are maps:

    request       {"id": int, "method": str, "params": map}      client → daemon
    response      {"id": int, "result": any}                       daemon → client
    error         {"id": int | None, "error": {"code": int, "message": str}}
    notification  {"method": str, "params": map}                   daemon → client

The wire types below are apart from the engine's (this module imports nothing of it, so the
language server loads no model code): every field is commented. An edit is the one `Edit` of
`vqedit.text`, carried as a map {start, end, text}.
`docs/protocol.md` is the reference for people writing clients.
"""

import asyncio
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from vqedit.text.edit import Edit, EditError

# Bumped on any incompatible change; `hello` refuses a client that speaks another one.
PROTOCOL_VERSION = 1
# Bytes of one frame's payload. 16 MiB is far beyond any prose document and bounds what one bad
# client can make the daemon allocate.
MAX_FRAME = 16 * 2**20
MAX_LABELS = 64  # zero-shot labels per document: a list for a person to read, and each costs a pass
LabelDescriptions = dict[str, str]  # zero-shot labels: name → description
# Before its `hello` succeeds a TCP client may send only frames this small: a hello is a few
# hundred bytes, and nobody without the token should make the daemon read and parse 16 MiB.
PRE_AUTH_FRAME = 64 * 2**10
QUOTE_CHARS = 80  # of a bad value quoted back in an error message, escaped
ERROR_CHARS = 2000  # of an error message: an error reply always fits in a frame
HEADER = struct.Struct(">I")  # the payload's length, big-endian
MAX_INT = 2**53  # versions and offsets stay exact in every client language (JavaScript too)


class ErrorCode(IntEnum):
    # The first five are JSON-RPC's, so that their meaning is familiar.
    PARSE_ERROR = -32700  # the frame is not valid msgpack
    INVALID_REQUEST = -32600  # not a map with an integer id and a string method
    METHOD_NOT_FOUND = -32601  # no such method
    INVALID_PARAMS = -32602  # a parameter is missing or has the wrong type
    INTERNAL_ERROR = -32603  # a bug in the daemon; the connection and other documents live on
    PROTOCOL_MISMATCH = 1  # `hello` with another protocol version; the message says what to do
    NOT_INITIALIZED = 2  # a method before a successful `hello`
    UNAUTHORIZED = 3  # a TCP connection without the right token
    UNKNOWN_DOCUMENT = 4  # the uri is not open in this session
    EDIT_OUT_OF_RANGE = 5  # an edit's offsets do not fit the document's text
    STALE_VERSION = 6  # a change whose version is not above the document's
    FRAME_TOO_LARGE = 7  # the frame's length exceeds MAX_FRAME; the connection is closed
    MODEL_UNAVAILABLE = 8  # the model could not be loaded; the message says why
    PASS_FAILED = 9  # computing a document raised; its text is kept, its model state dropped


class ProtocolError(Exception):
    """A request the daemon refuses: becomes an error response, never a crash."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- frames ---------------------------------------------------------------------------------

def encode(message: dict[str, Any]) -> bytes:
    """One frame: header and msgpack payload."""
    payload = msgpack.packb(message, use_bin_type=True)
    if len(payload) > MAX_FRAME:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE,
                            f"message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte limit")
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> Any:
    """A frame's payload as Python values; anything but one msgpack object is a PARSE_ERROR."""
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises many types (ValueError, ExtraData, StackError, …)
        raise ProtocolError(ErrorCode.PARSE_ERROR, f"malformed msgpack: {e}") from None


def _check_length(length: int, limit: int = MAX_FRAME) -> int:
    if length > limit:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE,
                            f"frame of {length} bytes exceeds the {limit}-byte limit")
    return length


async def read_frame(reader: asyncio.StreamReader, limit: int = MAX_FRAME) -> bytes | None:
    """The next frame's payload, or None at a clean end of stream (daemon side).

    Raises ProtocolError for a frame over `limit` and IncompleteReadError for a truncated one;
    after either the stream cannot be resynchronised and must be closed.
    """
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise
    return await reader.readexactly(_check_length(HEADER.unpack(header)[0], limit))


def recv_frame(sock: socket.socket) -> bytes | None:
    """The next frame's payload from a blocking socket, or None at end of stream (client side)."""
    header = _recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    payload = _recv_exactly(sock, _check_length(HEADER.unpack(header)[0]))
    if payload is None:
        raise ConnectionError("the daemon closed the connection inside a frame")
    return payload


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 2**20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# --- messages -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    id: int  # chosen by the client; echoed in the response
    method: str  # one of METHODS
    params: dict[str, Any]  # checked by the method's parser below


METHODS = ("hello", "open", "change", "close", "labels", "results", "stats", "reload",
           "shutdown")


def parse_request(message: Any) -> Request:
    """Check a decoded frame's envelope; raises ProtocolError (with the id when there is one)."""
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.INVALID_REQUEST,
                            f"a request is a map, got {type(message).__name__}")
    rid, method, params = message.get("id"), message.get("method"), message.get("params", {})
    if not _is_int(rid):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, "a request needs an integer id")
    if not isinstance(method, str):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, "a request needs a string method")
    if not isinstance(params, dict):
        raise ProtocolError(ErrorCode.INVALID_PARAMS, "params must be a map")
    return Request(rid, method, params)


def request_id(message: Any) -> int | None:
    """The id of a message, if it has a usable one: for error replies to broken requests."""
    rid = message.get("id") if isinstance(message, dict) else None
    return rid if _is_int(rid) else None


def response(rid: int, result: Any) -> dict[str, Any]:
    return {"id": rid, "result": result}


def error_response(rid: int | None, code: ErrorCode, message: str) -> dict[str, Any]:
    if len(message) > ERROR_CHARS:
        message = message[:ERROR_CHARS] + "…"
    return {"id": rid, "error": {"code": int(code), "message": message}}


def quote(value: Any) -> str:
    """A client's value for an error message: escaped, and no more than QUOTE_CHARS of it
    (a 5 MB method name must not come back 5 MB long)."""
    if isinstance(value, str | bytes) and len(value) > QUOTE_CHARS:
        return f"{value[:QUOTE_CHARS]!r}… ({len(value)} long)"
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…"


def notification(method: str, params: Any) -> dict[str, Any]:
    return {"method": method, "params": params}


def _is_int(value: Any) -> bool:
    # bool is an int in Python but never a valid id, version or offset on the wire.
    return isinstance(value, int) and not isinstance(value, bool) and -MAX_INT <= value <= MAX_INT


def _get(params: dict[str, Any], name: str, kind: type, optional: bool = False) -> Any:
    value = params.get(name)
    if value is None and optional:
        return None
    ok = _is_int(value) and value >= 0 if kind is int else isinstance(value, kind)
    if not ok:
        wanted = "non-negative integer" if kind is int else kind.__name__
        raise ProtocolError(ErrorCode.INVALID_PARAMS,
                            f"{name!r} must be a {wanted}, got {type(value).__name__}")
    return value


def _labels(params: dict[str, Any]) -> LabelDescriptions | None:
    """Zero-shot labels `{name: description}`: None, or 2 to MAX_LABELS named descriptions."""
    value = params.get("labels")
    if value is None:
        return None
    if not (isinstance(value, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
        raise ProtocolError(ErrorCode.INVALID_PARAMS,
                            "'labels' must be a map of label name to description, both strings")
    if not 2 <= len(value) <= MAX_LABELS:
        raise ProtocolError(ErrorCode.INVALID_PARAMS,
                            f"'labels' needs 2 to {MAX_LABELS} labels, got {len(value)}")
    # A description needs a letter or digit to give tokens, and so an embedding.
    empty = [name for name, text in value.items()
             if not name.strip() or not any(c.isalnum() for c in text)]
    if empty:
        raise ProtocolError(ErrorCode.INVALID_PARAMS,
                            f"labels need a name and a description with words: {empty}")
    return dict(value)


# --- wire types: params ---------------------------------------------------------------------

@dataclass(frozen=True)
class Hello:
    protocol: int  # the protocol version the client speaks (PROTOCOL_VERSION)
    client: str  # the client's name and version, for the log ("vqedit-client 0.1.0")
    token: str | None = None  # the secret token; required on TCP connections only

    @classmethod
    def parse(cls, params: dict[str, Any]) -> "Hello":
        return cls(_get(params, "protocol", int), _get(params, "client", str),
                   _get(params, "token", str, optional=True))


def parse_edit(value: Any) -> Edit:
    """An edit from its wire map {start, end, text}: offsets in Unicode code points of the text
    before this edit."""
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.INVALID_PARAMS, "an edit is a map {start, end, text}")
    try:
        return Edit(_get(value, "start", int), _get(value, "end", int), _get(value, "text", str))
    except EditError as e:
        raise ProtocolError(ErrorCode.EDIT_OUT_OF_RANGE, str(e)) from None


@dataclass(frozen=True)
class Open:
    uri: str  # the client's name for the document; unique within its session
    version: int  # the document's version, as the editor counts them
    text: str  # the whole text
    labels: LabelDescriptions | None = None  # zero-shot labels; None: the head

    @classmethod
    def parse(cls, params: dict[str, Any]) -> "Open":
        return cls(_get(params, "uri", str), _get(params, "version", int),
                   _get(params, "text", str), _labels(params))


@dataclass(frozen=True)
class Change:
    uri: str  # an open document of this session
    version: int  # the version after the edits; must be above the document's current one
    edits: tuple[Edit, ...]  # applied in order, each to the text the previous one left

    @classmethod
    def parse(cls, params: dict[str, Any]) -> "Change":
        edits = _get(params, "edits", list)
        return cls(_get(params, "uri", str), _get(params, "version", int),
                   tuple(parse_edit(e) for e in edits))


@dataclass(frozen=True)
class Labels:
    uri: str  # an open document of this session
    labels: LabelDescriptions | None  # its zero-shot labels from now on; None: the head

    @classmethod
    def parse(cls, params: dict[str, Any]) -> "Labels":
        return cls(_get(params, "uri", str), _labels(params))


@dataclass(frozen=True)
class DocumentRef:
    uri: str  # an open document of this session (close, results)

    @classmethod
    def parse(cls, params: dict[str, Any]) -> "DocumentRef":
        return cls(_get(params, "uri", str))


# --- wire types: results --------------------------------------------------------------------

@dataclass(frozen=True)
class Welcome:
    protocol: int  # the daemon's protocol version (equal to the client's, or hello failed)
    version: str  # the daemon's vqedit version; a client of another version restarts it
    pid: int  # the daemon's process id, for `vqedit daemon status` and debugging
    session: int  # this connection's session number, as the log names it


@dataclass(frozen=True)
class Paragraph:
    start: int  # first character of the paragraph (segment), in code points
    end: int  # one past its last character
    label: str  # the head's best label for this paragraph alone
    score: float  # that label's score


@dataclass(frozen=True)
class Cost:
    """What the pass behind a results notification cost, from the engine's counter."""

    macs: int  # multiply-accumulates of the edits applied (a coalesced batch) and of segments
    # computed from scratch (the first pass, split or merged paragraphs, evicted segments)
    dense_macs: int  # a dense full pass over every segment of the new text, for comparison
    tokens: int  # the document's model-input tokens (special tokens included)
    dirty: list[list[int]]  # per incrementally edited segment: tokens recomputed, per layer

    @classmethod
    def parse(cls, value: dict[str, Any]) -> "Cost":
        return cls(value["macs"], value["dense_macs"], value["tokens"], value["dirty"])


@dataclass(frozen=True)
class Results:
    uri: str  # the document
    version: int  # the version these results were computed for; older ones are superseded
    label: str | None  # the document's best label; None for a text without tokens
    scores: dict[str, float]  # every label's score, best first
    paragraphs: list[Paragraph]  # one per segment, in text order
    exact: bool  # True after idle compaction: equal to a fresh exact pass
    cost: Cost | None = None  # of the pass that computed them; None after compaction (and
    # from daemons older than this field)

    @classmethod
    def parse(cls, value: dict[str, Any]) -> "Results":
        """Results as received; fields this client does not know are ignored, so a daemon
        may add some without a new protocol version."""
        cost = value.get("cost")
        return cls(value["uri"], value["version"], value["label"], value["scores"],
                   [Paragraph(p["start"], p["end"], p["label"], p["score"])
                    for p in value["paragraphs"]], value["exact"],
                   None if cost is None else Cost.parse(cost))


@dataclass(frozen=True)
class Failed:
    """A document version the daemon could not compute: no results will come for it.

    The daemon keeps the text (the text is the truth) and drops the document's model state;
    it tries again, from the text, on the document's next `change`, `labels` or a reload, never
    on its own, so a pass that always fails costs one attempt per request, not a loop.
    """

    uri: str  # the document
    version: int  # the version whose pass failed (after compaction: the version compacted)
    code: int  # ErrorCode.PASS_FAILED, or MODEL_UNAVAILABLE when no model could be loaded
    message: str  # one line for people: what failed and what the daemon does next

    @classmethod
    def parse(cls, value: dict[str, Any]) -> "Failed":
        """As received; fields this client does not know are ignored, as for `Results`."""
        return cls(value["uri"], value["version"], value["code"], value["message"])


@dataclass(frozen=True)
class Stats:
    pid: int  # the daemon's process id
    version: str  # the daemon's vqedit version
    protocol: int  # PROTOCOL_VERSION
    uptime_s: float  # seconds since the daemon started
    model: str | None  # the loaded model (base + student), None while unloaded
    model_error: str | None  # why the last load failed, if it did
    head: str  # the head file
    device: str  # where the model runs: cpu or cuda
    mode: str  # engine mode: "exact" or "sticky δ=… sweep=…"
    sessions: int  # connected clients
    documents: int  # open documents, all sessions
    resident_documents: int  # documents whose segment states are in memory
    state_mb: float  # memory held by segment states
    memory_budget_mb: float  # the LRU budget for segment states
    evictions: int  # segment states dropped to stay within the budget (least recently used)
    restored: int  # evicted segments computed again because an edit reached them
    edits: int  # change requests accepted
    passes: int  # worker passes over a document (coalesced edits count once)
    superseded: int  # versions never computed because a newer one arrived first
    results_sent: int  # results notifications pushed
    compactions: int  # documents compacted in idle time
    reloads: int  # model reloads (reload requests and changes on disk)
    resyncs: int  # documents rebuilt from their text after an internal error
    failures: int  # passes and compactions that failed: each sent a `failed` notification
    stopped: int  # passes and compactions stopped early (document closed, newer version, …)
    computing: str | None  # the uri the worker is computing or compacting now; None when idle
    rss_mb: float  # the daemon's resident memory
    tcp_port: int | None  # the loopback TCP port, when listening on one


def pushed(message: Results | Failed) -> dict[str, Any]:
    """The notification the daemon pushes about a document: `results` or `failed`."""
    return notification("results" if isinstance(message, Results) else "failed",
                        to_wire(message))


def to_wire(value: Any) -> Any:
    """A wire dataclass as a map, its fields converted alike (lists, tuples and maps too);
    other values unchanged. Not `dataclasses.asdict`, which deep-copies every value: results
    of 328 paragraphs took 1.3 ms at every keystroke, this ~0.3."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: to_wire(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value
