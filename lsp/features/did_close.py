"""`textDocument/didClose`: forget the document and clear its diagnostics."""

import logging

from lsprotocol import types

from vqedit.lsp.server import VqeditServer

log = logging.getLogger("vqedit.lsp")


def did_close(ls: VqeditServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    if ls.documents.get(uri) is None:
        log.error("didClose for %s, which is not open; ignored", uri)
        return
    ls.close_document(uri)
    ls.recorder.closed(uri)
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri, []))
