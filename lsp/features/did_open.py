"""`textDocument/didOpen`: our own copy of the text; the backend gets it whole, at once."""

from typing import TYPE_CHECKING

from lsprotocol import types

from . import status

if TYPE_CHECKING:
    from vqedit.lsp.server import VqeditServer


def did_open(ls: "VqeditServer", params: types.DidOpenTextDocumentParams) -> None:
    document = ls.documents.open(params.text_document)
    ls.recorder.opened(document)
    ls.send_open(document)
    status.send(ls, document)
