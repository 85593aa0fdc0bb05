"""`textDocument/publishDiagnostics`: paragraphs whose label matches a rule, with their version.

The newest results are published even when the document has changed since they were computed
(typing faster than results arrive): their paragraphs are moved onto the current text and
those edited since are left out (documents.py), and they go out with the *current* version.
Not with the older one: the specification makes `version` optional information that clients need
not check, so a client puts the ranges on the text it has now, and ranges of an older text
would mark the wrong words. Versions published for a document therefore only go up. A
paragraph gets one diagnostic per matching rule, unless the user ignored that label for its
text (`vqedit.ignoreLabel`, ignored.py).
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
    results = document.results
    if results is None:
        return
    _report_unknown_labels(ls, results.scores.keys())
    found = [d for p in document.paragraphs(results)
             if p.label not in ls.ignored.labels(document.uri, document.text[p.start:p.end])
             for d in diagnose(document, p, ls.settings)]
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
    found = []
    for rule in settings.rules:
        if rule.label == paragraph.label and paragraph.score >= rule.min_score:
            end = min(paragraph.end, len(document.text))
            found.append(types.Diagnostic(
                range=document.range(min(paragraph.start, end), end),
                message=rule.message.format(label=paragraph.label, score=f"{paragraph.score:.2f}"),
                severity=SEVERITIES[rule.severity or settings.severity],
                code=paragraph.label, source=SOURCE))
    return found

