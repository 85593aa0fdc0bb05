"""Typing faster than results arrive: results for a version the editor has left are moved onto
the current text and published with the current version, so diagnostics keep coming while the
user types. A real `vqedit lsp` over stdio in front of the real daemon with the shipped student."""

import asyncio

import pytest

from tests.daemon_harness import private_dirs
from tests.lsp_harness import (
    EVERY_LABEL,
    FIRST,
    SECOND,
    change,
    diagnostics_for,
    edit,
    open_document,
    start,
    stop,
)

pytestmark = pytest.mark.asyncio

TEXT = f"{FIRST}\n\n{SECOND}\n"
INTERVAL_S = 0.005  # between changes: faster than the daemon computes a version
STREAM_LENGTH = 400  # changes at most: the stream stops at the first diagnostics


@pytest.fixture(scope="module", autouse=True)
def daemon_directories():
    with private_dirs() as paths:
        yield paths


def text_at(version: int) -> str:
    """Version v has lines "Line 2." … "Line v." typed above the first paragraph."""
    return "".join(f"Line {v}.\n" for v in range(version, 1, -1)) + TEXT


def covered(text: str, start_line: int, start: int, end_line: int, end: int) -> str:
    lines = text.split("\n")
    offset = lambda line, character: sum(len(s) + 1 for s in lines[:line]) + character  # noqa: E731
    return text[offset(start_line, start):offset(end_line, end)]


async def test_a_stream_of_changes_gets_diagnostics_before_it_stops():
    client = await start("neovim", configuration={"debounceMs": 0, **EVERY_LABEL})
    try:
        uri = "file:///tmp/typing.txt"
        open_document(client, uri, TEXT, language="plaintext")
        await diagnostics_for(client, uri, 1)

        # A line typed at the top per change, without pausing for results: the daemon, which
        # computes one version while several more arrive, is always behind.
        version = 1
        while not (during := [p for p in client.published if p.version > 1]):
            assert version < STREAM_LENGTH, "no diagnostics while the changes streamed"
            version += 1
            change(client, uri, version, edit(0, 0, 0, 0, f"Line {version}.\n"))
            await asyncio.sleep(INTERVAL_S)  # lets notifications in
        last_sent = version

        for published in during:
            assert published.version <= last_sent
            text = text_at(published.version)
            # Each diagnostic covers a paragraph's own text in the version it is published for.
            found = sorted(covered(text, d.range.start.line, d.range.start.character,
                                   d.range.end.line, d.range.end.character).strip()
                           for d in published.diagnostics)
            # The first paragraph's results from an older version cover FIRST alone; from this
            # version, the typed lines too.
            assert SECOND in found and all(f == SECOND or f.endswith(FIRST) for f in found)
    finally:
        await stop(client)
