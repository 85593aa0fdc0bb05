"""`initialize`: the negotiated position encoding, `initializationOptions`, the backend starts.

The options are the `vqedit` section itself, or an object holding it under `vqedit`
(both shapes are common among clients).
"""

from lsprotocol import types

from vqedit.lsp.server import VqeditServer

from . import configuration


def initialize(ls: VqeditServer, params: types.InitializeParams) -> None:
    ls.start_backend()
    ls.documents.encoding = ls.workspace.position_encoding
    options = params.initialization_options
    if isinstance(options, dict) and isinstance(options.get("vqedit"), dict):
        options = options["vqedit"]
    configuration.apply(ls, options, "initializationOptions")
