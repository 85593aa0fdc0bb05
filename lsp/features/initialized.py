"""`initialized`: pull the settings (`workspace/configuration`) and watch the model load.

While the backend's model loads, the client gets `$/progress` (when it offers
`window.workDoneProgress`) and `vqedit/status` with state `loading`; documents are kept in
sync and requests answered meanwhile.
"""

import asyncio
import contextlib

from lsprotocol import types

from vqedit.lsp.backend import ModelState
from vqedit.lsp.server import VqeditServer

from . import configuration

POLL_S = 0.2  # how often the backend is asked whether the model has loaded
PROGRESS_TOKEN = "vqedit-model-load"


async def initialized(ls: VqeditServer, params: types.InitializedParams) -> None:
    ls.background_tasks.add(asyncio.ensure_future(watch_model_load(ls)))
    await configuration.pull(ls)
    configuration.log_effective(ls, "in force after initialization")


async def watch_model_load(ls: VqeditServer) -> None:
    progress = ls.client_capabilities.window is not None and bool(
        ls.client_capabilities.window.work_done_progress)
    if progress:
        try:
            await ls.work_done_progress.create_async(PROGRESS_TOKEN)
        except Exception:  # a client that refuses the token gets no progress, only the status
            progress = False
    if progress:
        ls.work_done_progress.begin(PROGRESS_TOKEN, types.WorkDoneProgressBegin(
            title="vqedit", message="loading the model"))
    try:
        while True:
            try:
                state = await ls.call_backend(lambda backend: backend.model_state())
            except Exception as e:  # the daemon could not be started or reached
                state = ModelState("error", str(e))
            if ls.model.state != "ready":  # results may have said "ready" first
                ls.set_model(state)
            if ls.model.state != "loading":
                break
            await asyncio.sleep(POLL_S)
    finally:
        if progress:
            with contextlib.suppress(Exception):
                ls.work_done_progress.end(PROGRESS_TOKEN, types.WorkDoneProgressEnd(
                    message=ls.model.message or f"model {ls.model.state}"))
