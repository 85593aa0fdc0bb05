"""One module per LSP method (its docstring names the method), each with its handler as a
plain module-level function; `register_features` is the one place that binds each handler to
its method."""

from typing import TYPE_CHECKING

from lsprotocol import types

from . import (
    code_action,
    did_change,
    did_change_configuration,
    did_close,
    did_open,
    execute_command,
    hover,
    initialize,
    initialized,
)

if TYPE_CHECKING:
    from vqedit.lsp.server import VqeditServer


def register_features(server: "VqeditServer") -> None:
    server.feature(types.INITIALIZE)(initialize.initialize)
    server.feature(types.INITIALIZED)(initialized.initialized)
    server.feature(types.TEXT_DOCUMENT_DID_OPEN)(did_open.did_open)
    server.feature(types.TEXT_DOCUMENT_DID_CHANGE)(did_change.did_change)
    server.feature(types.TEXT_DOCUMENT_DID_CLOSE)(did_close.did_close)
    server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)(
        did_change_configuration.did_change_configuration)
    server.feature(types.TEXT_DOCUMENT_HOVER)(hover.hover)
    server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.QuickFix]))(code_action.code_action)
    for name, handler in execute_command.COMMANDS.items():
        server.command(name)(handler)
