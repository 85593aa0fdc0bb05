"""`workspace/configuration`: pull the `vqedit` section; and the one way settings change.

`apply` is used for `initializationOptions`, for pulled sections and for pushed ones
(did_change_configuration.py): invalid values are logged and shown (`window/showMessage`) and
the previous value stays; the effective settings are logged whenever they change.
"""

import json
import logging
from typing import Any

from lsprotocol import types

from vqedit.lsp import settings
from vqedit.lsp.server import VqeditServer

log = logging.getLogger("vqedit.lsp")


async def pull(ls: VqeditServer) -> None:
    """Ask the client for the `vqedit` section, if it can answer."""
    workspace = ls.client_capabilities.workspace
    if workspace is None or not workspace.configuration:
        return
    try:
        sections = await ls.workspace_configuration_async(types.ConfigurationParams(
            items=[types.ConfigurationItem(section="vqedit")]))
    except Exception as e:
        log.error("workspace/configuration failed: %s", e)
        return
    if sections:
        apply(ls, sections[0], "workspace/configuration")


def apply(ls: VqeditServer, raw: Any, source: str) -> None:
    new, errors = settings.update(ls.settings, raw)
    for error in errors:
        log.error("settings from %s: %s", source, error)
        ls.window_show_message(types.ShowMessageParams(types.MessageType.Error,
                                                       f"vqedit: {error}"))
    if new == ls.settings:
        return
    old, ls.settings = ls.settings, new
    log_effective(ls, f"from {source}")
    if old.labels != new.labels:
        ls.relabel()  # new results follow, published with the new rules
    elif (old.rules, old.severity) != (new.rules, new.severity):
        ls.republish()
    ls.recorder.configure(new.edit_log)


def log_effective(ls: VqeditServer, why: str) -> None:
    log.info("effective settings (%s): %s", why, json.dumps(ls.settings.as_client_json()))
