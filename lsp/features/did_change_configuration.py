"""`workspace/didChangeConfiguration`: take the pushed `vqedit` section, or pull it again.

Clients differ: some push the whole configuration (`{"vqedit": {...}}`), some push the section,
some push nothing useful and expect the server to pull. A push with a `vqedit` object is used
as it is; anything else triggers a `workspace/configuration` pull.
"""

from lsprotocol import types

from vqedit.lsp.server import VqeditServer

from . import configuration


async def did_change_configuration(ls: VqeditServer,
                                   params: types.DidChangeConfigurationParams) -> None:
    pushed = params.settings
    if isinstance(pushed, dict) and isinstance(pushed.get("vqedit"), dict):
        configuration.apply(ls, pushed["vqedit"], "workspace/didChangeConfiguration")
    else:
        await configuration.pull(ls)
