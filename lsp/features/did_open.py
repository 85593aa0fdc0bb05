"""`textDocument/didOpen`: our own copy of the text; the backend gets it whole, at once."""

from lsprotocol import types

from vqedit.lsp.server import VqeditServer


def did_open(ls: VqeditServer, params: types.DidOpenTextDocumentParams) -> None:
    document = ls.documents.open(params.text_document)
    ls.recorder.opened(document)
    ls.send_open(document)
    ls.send_status(document)
