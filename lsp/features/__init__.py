"""One module per LSP method (its docstring names the method); `register_features` wires them."""

from typing import TYPE_CHECKING

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

HANDLERS = [initialize, initialized, did_open, did_change, did_close, did_change_configuration,
            hover, code_action, execute_command]


def register_features(server: "VqeditServer") -> None:
    for module in HANDLERS:
        module.register(server)
