"""A daemon that stops answering does not make the server queue a backend call (and a copy of
the text) per keystroke: edits join the one change waiting per document, and once the daemon
answers again the diagnostics are those of the final text. A real `vqedit lsp` over stdio in
front of the real daemon with the shipped student, stopped with SIGSTOP while the client types."""

import asyncio
import os
import signal

import pytest

from tests.daemon_harness import private_dirs
from tests.lsp_harness import (
    EVERY_LABEL,
    FIRST,
    SECOND,
    change,
    command,
    diagnostics_for,
    edit,
    open_document,
    server_text,
    start,
    stop,
    until,
)
from vqedit.daemon.lifecycle import running_pid

pytestmark = pytest.mark.asyncio

TEXT = f"{FIRST}\n\n```\ncode()\n```\n\n{SECOND}\n"
TYPED = (" The fans sang until the final whistle." * 6)[:199] + "!"  # a character per change
MOST_WAITING = 2  # a change waiting and one other call (a stats or labels request)


@pytest.fixture(scope="module")
def daemon_paths():
    with private_dirs() as paths:
        yield paths


def spans(published) -> list[tuple[int, int, int, int, str]]:
    return sorted((d.range.start.line, d.range.start.character, d.range.end.line,
                   d.range.end.character, str(d.code)) for d in published.diagnostics)


async def test_typing_while_the_daemon_hangs_keeps_one_change_waiting(daemon_paths):
    client = await start("neovim", configuration={"debounceMs": 0, **EVERY_LABEL})
    try:
        uri = "file:///tmp/hang.md"
        open_document(client, uri, TEXT)
        await diagnostics_for(client, uri, 1, lines=[0, 6])
        pid = running_pid(daemon_paths)
        assert pid is not None

        os.kill(pid, signal.SIGSTOP)
        try:
            for version, character in enumerate(TYPED, start=2):
                column = len(FIRST) + version - 2
                change(client, uri, version, edit(0, column, 0, column, character))
                await asyncio.sleep(0.002)  # lets the server send each change on its own
            final = TEXT.replace(FIRST, FIRST + TYPED)
            assert await server_text(client, uri) == final
        finally:
            os.kill(pid, signal.SIGCONT)

        last = len(TYPED) + 1
        # Results of the final text (older ones, moved, end the first paragraph before TYPED).
        typed = await until(lambda: next(
            (p for p in client.published if p.uri == uri and p.version == last
             and len(FIRST + TYPED) in {d.range.end.character for d in p.diagnostics}), None),
            "diagnostics of the final text")
        stats = (await command(client, "vqedit.stats"))["server"]
        assert stats["most_backend_calls_waiting"] <= MOST_WAITING, stats
        assert stats["edits_waiting"] == 0

        # The same text opened fresh gets the same diagnostics: nothing typed was lost.
        fresh = "file:///tmp/fresh.md"
        open_document(client, fresh, final)
        assert spans(await diagnostics_for(client, fresh, 1, lines=[0, 6])) == spans(typed)
    finally:
        await stop(client)
