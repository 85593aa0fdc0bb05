"""The language server assembled: a `VqeditServer` on its backend, every handler bound to its
method (one module per method in `features/`), and the log sent on to the client."""

import logging

from lsprotocol import types

from .backend import DaemonBackend
from .features import (
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
from .server import ClientLog, VqeditServer


def create_server(in_process: bool = False) -> VqeditServer:
    if in_process:
        from .inprocess import InProcessBackend  # imports torch: only when asked for
        server = VqeditServer(InProcessBackend)
    else:
        server = VqeditServer(DaemonBackend)
    register_features(server)
    logging.getLogger("vqedit").addHandler(ClientLog(server))
    return server


def register_features(server: VqeditServer) -> None:
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
