"""`workspace/executeCommand`: the server-side commands (docs/lsp.md).

    vqedit.recompute   [uri]               the document from scratch
    vqedit.stats       []                  the backend's statistics and the server's, as an object
    vqedit.ignoreLabel [uri, line, label]  stop reporting `label` for the paragraph at `line`
                                           (for its text, across closes and restarts)
    vqedit.clearIgnored [uri]              report every label of the document again; returns
                                           how many ignored labels were forgotten
    vqedit.text        [uri]               debugging aid: the server's own copy of the text,
                                           {uri, version, text}; tests compare it with the client's

Bad arguments get an error reply and a logged error; nothing changes.
"""

import json
import logging
from typing import Any

from vqedit.lsp.documents import Document
from vqedit.lsp.server import VqeditServer

log = logging.getLogger("vqedit.lsp")

RECOMPUTE, STATS, IGNORE_LABEL, CLEAR_IGNORED, TEXT = (
    "vqedit.recompute", "vqedit.stats", "vqedit.ignoreLabel", "vqedit.clearIgnored", "vqedit.text")


class CommandError(ValueError):
    """Bad arguments: the message goes to the log and into the error reply."""


def recompute(ls: VqeditServer, *args: Any) -> None:
    document = _document(ls, RECOMPUTE, args, 1)
    ls.documents.renew(document)
    ls.send_open(document)


async def stats(ls: VqeditServer, *args: Any) -> dict[str, Any]:
    found = {"backend": await ls.call_backend(lambda backend: backend.stats()),
             "server": {"documents": len(ls.documents.open_documents),
                        "position_encoding": ls.documents.encoding,
                        "model_state": ls.model.state,
                        "most_backend_calls_waiting": ls.most_calls_waiting,
                        "edits_waiting": ls.outbox.edits_waiting(),
                        "settings": ls.settings.as_client_json()}}
    log.info("stats: %s", json.dumps(found, default=str))
    return found


def ignore_label(ls: VqeditServer, *args: Any) -> None:
    document = _document(ls, IGNORE_LABEL, args, 3)
    line, label = args[1], args[2]
    if isinstance(line, bool) or not isinstance(line, int) or not isinstance(label, str):
        raise _fail(f"{IGNORE_LABEL} takes [uri, line (integer), label (string)], got "
                    f"{list(args)!r}")
    results = document.results
    start = document.lines.offset(line, 0).offset
    end = document.lines.line_end(line) if line < len(document.lines.starts) else start
    paragraph = next((p for p in document.paragraphs(results)
                      if p.start <= end and start <= p.end),
                     None) if results is not None else None
    if paragraph is None:
        raise _fail(f"{IGNORE_LABEL}: no paragraph with results at line {line} of "
                    f"{document.uri}")
    ls.ignored.add(document.uri, document.text[paragraph.start:paragraph.end], label)
    ls.publish_diagnostics(document)


def clear_ignored(ls: VqeditServer, *args: Any) -> int:
    document = _document(ls, CLEAR_IGNORED, args, 1)
    cleared = ls.ignored.clear(document.uri)
    log.info("%s: %d ignored label(s) cleared", document.uri, cleared)
    ls.publish_diagnostics(document)
    return cleared


def text(ls: VqeditServer, *args: Any) -> dict[str, Any]:
    document = _document(ls, TEXT, args, 1)
    return {"uri": document.uri, "version": document.version, "text": document.text}


COMMANDS = {RECOMPUTE: recompute, STATS: stats, IGNORE_LABEL: ignore_label,
            CLEAR_IGNORED: clear_ignored, TEXT: text}


def _document(ls: VqeditServer, command: str, args: tuple[Any, ...], count: int) -> Document:
    if len(args) != count or not isinstance(args[0], str):
        raise _fail(f"{command} takes {count} argument(s) starting with a uri, got {list(args)!r}")
    document = ls.documents.get(args[0])
    if document is None:
        raise _fail(f"{command}: {args[0]} is not open")
    return document


def _fail(message: str) -> CommandError:
    log.error("%s", message)
    return CommandError(message)
