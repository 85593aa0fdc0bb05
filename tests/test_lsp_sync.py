"""The server's copy of a text equals the client's after every didChange (hypothesis).

Random notifications of one to three changes each (ranges and whole-text replacements), texts
with characters outside the BMP (surrogate pairs in UTF-16, four bytes in UTF-8), CRLF, lone CR
and LF line breaks, and edits at the end of the document, against a real server over stdio in
both position encodings. Positions are computed here by a reference that shares no code with
the server's (vqedit.text.lines).
"""

import itertools
import re

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types

from tests.daemon_harness import private_dirs
from tests.lsp_harness import change, errors, open_document, server_text, start, stop

PIECES = ["a", "b", " ", ".", "\n", "\r\n", "\r", "é", "中", "😀", "𝄞"]
texts = st.lists(st.sampled_from(PIECES), max_size=24).map("".join)
URIS = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def daemon_directories():
    with private_dirs() as paths:
        yield paths


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["utf-8", "utf-16"])
async def client(request):
    client = await start("neovim", encodings=[request.param])
    client.encoding = request.param
    yield client
    await stop(client)


def reference_position(text: str, offset: int, encoding: str) -> types.Position:
    lines = re.split(r"\r\n|\r|\n", text[:offset])
    last = lines[-1]
    if encoding == "utf-8":
        character = len(last.encode("utf-8"))
    else:
        character = sum(2 if ord(c) > 0xFFFF else 1 for c in last)
    return types.Position(len(lines) - 1, character)


def offsets(text: str) -> st.SearchStrategy[int]:
    """Offsets a client could send: anywhere but inside a CRLF; the end often."""
    valid = [i for i in range(len(text) + 1) if not text.startswith("\n", i)
             or not text.endswith("\r", 0, i)]
    return st.one_of(st.just(len(text)), st.sampled_from(valid))


@pytest.mark.asyncio(loop_scope="module")
@settings(max_examples=30)
@given(data=st.data(), initial=texts)
async def test_server_text_equals_the_client_text_after_every_change(client, data, initial):
    uri = f"file:///tmp/sync-{next(URIS)}.md"
    open_document(client, uri, initial)
    expected = initial
    for version in range(2, data.draw(st.integers(2, 5), label="notifications") + 2):
        changes = []
        for _ in range(data.draw(st.integers(1, 3), label="changes")):
            inserted = data.draw(texts, label="text")
            if data.draw(st.integers(0, 9)) == 0:
                changes.append(types.TextDocumentContentChangeWholeDocument(text=inserted))
                expected = inserted
                continue
            start, end = sorted((data.draw(offsets(expected)), data.draw(offsets(expected))))
            changes.append(types.TextDocumentContentChangePartial(
                range=types.Range(reference_position(expected, start, client.encoding),
                                  reference_position(expected, end, client.encoding)),
                text=inserted))
            expected = expected[:start] + inserted + expected[end:]
        change(client, uri, version, *changes)
        assert await server_text(client, uri) == expected
    client.text_document_did_close(types.DidCloseTextDocumentParams(
        types.TextDocumentIdentifier(uri)))
    assert errors(client) == []
