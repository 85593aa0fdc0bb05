"""`textDocument/hover`: the document's label scores and those of the paragraph under the cursor.

Answered from the newest results, even if a newer version is still being computed or failed
(the hover says which); before the first results, or between paragraphs, it says what it can.
"""

from lsprotocol import types

from vqedit.lsp.server import VqeditServer


def hover(ls: VqeditServer, params: types.HoverParams) -> types.Hover | None:
    document = ls.documents.get(params.text_document.uri)
    if document is None:
        return None
    results = document.results
    if results is None:
        text = f"vqedit: no results yet (model {ls.model.state})"
        return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text))
    offset = document.lines.offset(params.position.line, params.position.character).offset
    lines = ["**vqedit** document: " + _scores(results.scores)]
    paragraph = next((p for p in document.paragraphs(results) if p.start <= offset < p.end),
                     None)
    if paragraph is not None:
        lines.append(f"paragraph: **{paragraph.label}** {paragraph.score:.2f}")
    if document.failure is not None:
        lines.append(f"_(not up to date: {document.failure.message})_")
    elif results.version != document.revision:
        lines.append("_(from an earlier version; newer results are on their way)_")
    return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, "\n\n".join(lines)))


def _scores(scores: dict[str, float]) -> str:
    return ", ".join(f"{label} {score:.2f}" for label, score in scores.items())
