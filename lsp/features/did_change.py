"""`textDocument/didChange`: apply to our own copy now, send to the backend after the debounce."""

import logging

from lsprotocol import types

from vqedit.lsp.server import VqeditServer

log = logging.getLogger("vqedit.lsp")


def did_change(ls: VqeditServer, params: types.DidChangeTextDocumentParams) -> None:
    document = ls.documents.get(params.text_document.uri)
    if document is None:
        log.error("didChange for %s, which is not open; ignored", params.text_document.uri)
        return
    ls.documents.change(document, params.text_document.version, params.content_changes)
    ls.recorder.changed(document, params.text_document.version, params.content_changes)
    ls.schedule(document)
