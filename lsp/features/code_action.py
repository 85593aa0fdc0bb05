"""`textDocument/codeAction`: a quick fix on each vqedit diagnostic, calling `vqedit.ignoreLabel`.

The fix is a server-side command, so every editor gets it without client-side code.
"""

from lsprotocol import types

from vqedit.lsp.server import VqeditServer

from .diagnostics import SOURCE
from .execute_command import IGNORE_LABEL


def code_action(ls: VqeditServer, params: types.CodeActionParams) -> list[
        types.CodeAction]:
    uri = params.text_document.uri
    actions = []
    for diagnostic in params.context.diagnostics:
        if diagnostic.source != SOURCE or not isinstance(diagnostic.code, str):
            continue
        title = f"Ignore “{diagnostic.code}” for this paragraph"
        actions.append(types.CodeAction(
            title, kind=types.CodeActionKind.QuickFix, diagnostics=[diagnostic],
            command=types.Command(title, IGNORE_LABEL, arguments=[
                uri, diagnostic.range.start.line, diagnostic.code])))
    return actions
