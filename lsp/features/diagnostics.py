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

from collections.abc import Collection

from lsprotocol import types

from vqedit.daemon.protocol import Paragraph
from vqedit.lsp.documents import Document
from vqedit.lsp.ignored import IgnoredLabels
from vqedit.lsp.settings import SEVERITIES, Settings

SOURCE = "vqedit"


def params(document: Document, settings: Settings,
           ignored: IgnoredLabels) -> types.PublishDiagnosticsParams | None:
    """The document's diagnostics from its newest results, None before the first."""
    results = document.results
    if results is None:
        return None
    found = [d for p in document.paragraphs(results)
             if p.label not in ignored.labels(document.uri, document.text[p.start:p.end])
             for d in diagnose(document, p, settings)]
    return types.PublishDiagnosticsParams(document.uri, found, version=document.version)


def unknown_labels(settings: Settings, labels: Collection[str]) -> frozenset[str]:
    """The labels rules name that the results do not have: those rules never fire."""
    return frozenset(r.label for r in settings.rules) - set(labels)


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

