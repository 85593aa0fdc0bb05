"""`textDocument/publishDiagnostics`: paragraphs whose label matches a rule, with their version.

Only results for the document's newest revision are published (server.py drops the rest), so
every range refers to the text the client has at that version. A paragraph gets one diagnostic
per matching rule, unless `vqedit.ignoreLabel` silenced that label there.
"""

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

from lsprotocol import types

from vqedit.daemon.protocol import Paragraph
from vqedit.lsp.documents import Document
from vqedit.lsp.settings import SEVERITIES, Settings

if TYPE_CHECKING:
    from vqedit.lsp.server import VqeditServer

log = logging.getLogger("vqedit.lsp")

SOURCE = "vqedit"


def publish(ls: "VqeditServer", document: Document) -> None:
    results = document.current
    if results is None:
        return
    _report_unknown_labels(ls, results.scores.keys())
    found = [d for p in results.paragraphs for d in diagnose(document, p, ls.settings)]
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
        document.uri, found, version=document.version))


def _report_unknown_labels(ls: "VqeditServer", labels: Collection[str]) -> None:
    """Say once (per set) which rules name labels the results do not have: they never fire."""
    unknown = frozenset(r.label for r in ls.settings.rules) - set(labels)
    if unknown and labels and unknown != ls.unknown_rule_labels:
        message = (f"vqedit: rules name labels that are not in use: {', '.join(sorted(unknown))} "
                   f"(labels: {', '.join(labels)})")
        log.warning("%s", message)
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Warning, message))
    ls.unknown_rule_labels = unknown


def diagnose(document: Document, paragraph: Paragraph, settings: Settings) -> list[
        types.Diagnostic]:
    if is_ignored(document, paragraph):
        return []
    found = []
    for rule in settings.rules:
        if rule.label == paragraph.label and paragraph.score >= rule.min_score:
            end = min(paragraph.end, len(document.text))
            found.append(types.Diagnostic(
                range=document.lines.range(min(paragraph.start, end), end),
                message=rule.message.format(label=paragraph.label, score=f"{paragraph.score:.2f}"),
                severity=SEVERITIES[rule.severity or settings.severity],
                code=paragraph.label, source=SOURCE))
    return found


def is_ignored(document: Document, paragraph: Paragraph) -> bool:
    return any(i.label == paragraph.label and paragraph.start <= i.offset < paragraph.end
               for i in document.ignored)
