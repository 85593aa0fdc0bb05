"""`vqedit lsp` when the daemon fails to compute a document: a real server over stdio, a real
tiny-model daemon whose head file is replaced by one that loads and fails at every pass
(daemon_harness.write_float64_head; tests/test_daemon_failed.py has the daemon's side)."""

import pytest

from tests.daemon_harness import (
    LABELS,
    PROSE,
    make_tiny_model,
    private_dirs,
    write_float64_head,
    write_head,
)
from tests.lsp_harness import (
    change,
    diagnostics_for,
    edit,
    errors,
    open_document,
    start,
    stop,
    until,
)
from vqedit.daemon.client import DaemonClient
from vqedit.lab.replay.driver import LspDriver

EVERY_LABEL = {"debounceMs": 0, "rules": [{"label": label, "minScore": 0.0} for label in LABELS]}


def failed_status(client, uri: str, version: int):
    return until(lambda: next((s for s in client.statuses if s.uri == uri and s.state == "error"
                               and s.failedVersion == version), None),
                 f"the error status of {uri} v{version}")


@pytest.mark.asyncio
async def test_a_failed_pass_shows_in_the_status_is_logged_once_and_keeps_the_diagnostics(
        tmp_path):
    tiny = make_tiny_model(tmp_path)
    with private_dirs() as paths, DaemonClient(
            daemon_args=tiny.daemon_args("--compact-after-s", "60"), paths=paths) as daemon:
        daemon.connect()  # the tiny daemon runs; the server finds it instead of spawning one
        client = await start("visual-studio-code", options=EVERY_LABEL)
        try:
            uri = "file:///tmp/failing.txt"
            open_document(client, uri, PROSE, language="plaintext")
            first = await diagnostics_for(client, uri, 1)
            assert len(first.diagnostics) == 3  # one per paragraph

            write_float64_head(tiny.head)  # the daemon reloads it; recomputing version 1 fails
            status = await failed_status(client, uri, 1)
            assert "version" in status.message and "failed" in status.message
            assert status.label in LABELS  # the last good results still name the label

            change(client, uri, 2, edit(0, 0, 0, 3, "A"))  # fails again: one more status
            await failed_status(client, uri, 2)
            # The last good diagnostics stay; nothing was published for the failed versions.
            assert [p.version for p in client.published if p.uri == uri] == [1]
            logged = [m for m in errors(client) if uri in m]
            assert len(logged) == 1 and "failed" in logged[0], errors(client)
            shown = [m.message for m in client.messages if uri in m.message]
            assert shown == logged, client.messages  # said once to the user too

            write_head(tiny.head, LABELS, seed=0)  # fixed: the reload computes version 2
            await diagnostics_for(client, uri, 2)
            ready = await until(lambda: next((s for s in client.statuses if s.uri == uri
                                              and s.state == "ready" and s.resultsVersion == 2),
                                             None), "the ready status of version 2")
            assert ready.failedVersion is None and ready.message is None
        finally:
            await stop(client)


def test_the_driver_behind_bench_lsp_stops_waiting_when_the_version_failed(tmp_path):
    tiny = make_tiny_model(tmp_path)
    write_float64_head(tiny.head)  # every pass fails from the first
    with private_dirs() as paths, DaemonClient(daemon_args=tiny.daemon_args(),
                                               paths=paths) as daemon:
        daemon.connect()
        with LspDriver(settings=EVERY_LABEL, timeout=300) as lsp:
            uri = "file:///tmp/never.txt"
            lsp.open(uri, PROSE, 1, language="plaintext")
            with pytest.raises(RuntimeError, match=r"could not compute .* version 1"):
                lsp.wait_published(uri, 1)
