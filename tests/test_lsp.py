"""`vqedit lsp` end to end: a real server over stdio, the real daemon with the shipped student,
and pytest-lsp's client speaking as Neovim and as VS Code."""

import os
import signal

import pytest
from lsprotocol import types

from tests.daemon_harness import private_dirs
from tests.lsp_harness import (
    EVERY_LABEL,
    PROFILES,
    TOPICS,
    change,
    command,
    diagnostics_for,
    edit,
    errors,
    open_document,
    server_text,
    start,
    status_for,
    stop,
    until,
)
from vqedit.daemon.lifecycle import running_pid

AS_WARNINGS = {**EVERY_LABEL, "severity": "warning"}  # every paragraph label, as warnings
MARKDOWN = ("---\ntitle: Match report\n---\n"
            "The striker scored twice in the second half and the home side won the cup.\n\n"
            "```python\nprint('the government raised taxes on banks')\n```\n\n"
            "    indented = 'a code block too'\n\n"
            "Shares in the chip maker rose after strong quarterly profits.\n")
PROSE_LINES = [3, 11]  # where the two prose paragraphs start

pytestmark = pytest.mark.asyncio


@pytest.fixture(scope="module", autouse=True)
def daemon_directories():
    """One private daemon for the module, spawned by the first server and stopped at the end."""
    with private_dirs() as paths:
        yield paths


@pytest.mark.parametrize("profile", PROFILES)
async def test_diagnostics_status_and_sync_as_a_real_editor(profile):
    client = await start(profile, options=AS_WARNINGS)
    try:
        uri = f"file:///tmp/{profile}.md"
        open_document(client, uri, MARKDOWN)
        first = await diagnostics_for(client, uri, 1)
        # Front matter and both code blocks are skipped: one diagnostic per prose paragraph.
        assert sorted(d.range.start.line for d in first.diagnostics) == PROSE_LINES
        assert all(d.source == "vqedit" and d.code in TOPICS for d in first.diagnostics)
        assert all(d.severity == types.DiagnosticSeverity.Warning for d in first.diagnostics)
        status = await status_for(client, uri, 1)
        assert status.state == "ready" and status.label in TOPICS and 0 < status.score <= 1

        change(client, uri, 2, edit(3, 0, 3, 0, "Late on, "), edit(11, 0, 11, 6, "Stock"))
        expected = MARKDOWN.replace("The striker", "Late on, The striker").replace(
            "Shares in", "Stock in")
        assert await server_text(client, uri) == expected
        second = await diagnostics_for(client, uri, 2, PROSE_LINES)
        assert second.diagnostics[0].range.end.character > first.diagnostics[0].range.end.character
        assert errors(client) == []
    finally:
        await stop(client)


async def test_progress_while_loading_and_hover():
    client = await start("neovim", options=AS_WARNINGS)
    try:
        uri = "file:///tmp/hover.md"
        open_document(client, uri, MARKDOWN)
        await diagnostics_for(client, uri, 1)
        reports = await until(lambda: client.progress_reports.get("vqedit-model-load"),
                              "model load progress")
        await until(lambda: isinstance(reports[-1], types.WorkDoneProgressEnd), "progress end")
        assert isinstance(reports[0], types.WorkDoneProgressBegin)

        hover = await client.text_document_hover_async(types.HoverParams(
            types.TextDocumentIdentifier(uri), types.Position(3, 5)))
        text = hover.contents.value
        assert "document:" in text and "paragraph:" in text
        assert all(label in text for label in TOPICS)
    finally:
        await stop(client)


async def test_quick_fix_ignores_the_label_for_that_paragraph():
    client = await start("visual-studio-code", options=AS_WARNINGS)
    try:
        uri = "file:///tmp/fix.md"
        open_document(client, uri, MARKDOWN)
        found = await diagnostics_for(client, uri, 1)
        target = next(d for d in found.diagnostics if d.range.start.line == 11)
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            types.TextDocumentIdentifier(uri), target.range,
            types.CodeActionContext(diagnostics=[target])))
        assert [a.kind for a in actions] == [types.CodeActionKind.QuickFix]
        client.published.clear()
        await command(client, actions[0].command.command, *actions[0].command.arguments)
        after = await diagnostics_for(client, uri, 1)
        assert [d.range.start.line for d in after.diagnostics] == [3]

        # The paragraph stays ignored through an edit elsewhere and a recompute.
        change(client, uri, 2, edit(0, 0, 0, 0, ""))
        change(client, uri, 3, edit(3, 0, 3, 3, "A"))
        await diagnostics_for(client, uri, 3, [3])
        stats = await command(client, "vqedit.stats")
        assert stats["backend"]["model"] is not None and stats["server"]["documents"] == 1
    finally:
        await stop(client)


async def first_lines(client, uri: str) -> list[int]:
    """The lines of the first diagnostics published for `uri` at version 1 from now on."""
    client.published.clear()
    found = await diagnostics_for(client, uri, 1)
    return sorted(d.range.start.line for d in found.diagnostics)


async def test_ignored_labels_survive_closing_and_restarts_until_cleared():
    uri = "file:///tmp/kept.md"
    client = await start("neovim", options=AS_WARNINGS)
    try:
        open_document(client, uri, MARKDOWN)
        found = await diagnostics_for(client, uri, 1)
        label = next(d.code for d in found.diagnostics if d.range.start.line == 11)
        await command(client, "vqedit.ignoreLabel", uri, 11, label)
        await diagnostics_for(client, uri, 1, [3])
        client.text_document_did_close(types.DidCloseTextDocumentParams(
            types.TextDocumentIdentifier(uri)))
        open_document(client, uri, MARKDOWN)
        assert await first_lines(client, uri) == [3]
    finally:
        await stop(client)

    client = await start("visual-studio-code", options=AS_WARNINGS)  # a new server process
    try:
        open_document(client, uri, MARKDOWN)
        assert await first_lines(client, uri) == [3]
        # Keyed by the paragraph's text: edited, it is a new paragraph and reported again.
        change(client, uri, 2, edit(11, 0, 11, 6, "Stock"))
        await diagnostics_for(client, uri, 2, PROSE_LINES)
        change(client, uri, 3, edit(11, 0, 11, 5, "Shares"))  # back to the ignored text
        await diagnostics_for(client, uri, 3, [3])
        assert await command(client, "vqedit.clearIgnored", uri) == 1  # the edits kept it
        await diagnostics_for(client, uri, 3, PROSE_LINES)
        assert await command(client, "vqedit.clearIgnored", uri) == 0
    finally:
        await stop(client)


async def test_bad_input_is_logged_and_the_text_stays_right():
    client = await start("visual-studio-code", configuration={"debounceMs": 0, **AS_WARNINGS})
    try:
        uri = "file:///tmp/bad.txt"
        text = "First line.\nSecond line."
        open_document(client, uri, text, language="plaintext")
        await diagnostics_for(client, uri, 1)

        # Unknown documents: logged, nothing else happens.
        change(client, "file:///tmp/never-opened.txt", 2, edit(0, 0, 0, 0, "x"))
        client.text_document_did_close(types.DidCloseTextDocumentParams(
            types.TextDocumentIdentifier("file:///tmp/never-opened.txt")))
        await until(lambda: len(errors(client)) >= 2, "errors for unknown documents")

        # A range past the end of the text is clamped to its end (logged); a character past the
        # end of a line means the line's end (LSP's rule).
        change(client, uri, 2, edit(7, 3, 9, 0, " Appended."), edit(0, 99, 0, 99, "!"))
        assert await server_text(client, uri) == "First line.!\nSecond line. Appended."
        assert any("past the last line" in e for e in errors(client))
        await diagnostics_for(client, uri, 2)

        # Invalid settings: an error shown and logged, the previous value kept.
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"vqedit": {"debounceMs": -5, "severity": "loud"}}))
        await until(lambda: len(client.messages) >= 2, "showMessage for invalid settings")
        assert [m.type for m in client.messages] == [types.MessageType.Error] * 2
        stats = await command(client, "vqedit.stats")
        settings = stats["server"]["settings"]
        assert settings["debounceMs"] == 0 and settings["severity"] == "warning"

        # Closed and opened again: the new text's diagnostics, not the old one's.
        client.text_document_did_close(types.DidCloseTextDocumentParams(
            types.TextDocumentIdentifier(uri)))
        client.published.clear()
        open_document(client, uri, "The match went to extra time.", language="plaintext")
        reopened = await diagnostics_for(client, uri, 1)
        assert [d.range.end for d in reopened.diagnostics] == [types.Position(0, 29)]

        # A rule for a label the results do not have would never fire: the user is told.
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"vqedit": {"rules": [{"label": "poetry"}]}}))
        await until(lambda: any("not in use: poetry" in m.message for m in client.messages),
                    "a warning about the unknown rule label")

        # A bad command argument is an error reply, and the document is untouched.
        with pytest.raises(Exception, match="not open"):
            await command(client, "vqedit.ignoreLabel", "file:///nowhere", 0, "sport")
        assert await server_text(client, uri) == "The match went to extra time."
    finally:
        await stop(client)


async def test_in_process_gives_the_same_diagnostics_without_a_daemon():
    with private_dirs() as paths:
        client = await start("neovim", options=AS_WARNINGS, server_args=("--in-process",))
        try:
            uri = "file:///tmp/in-process.md"
            open_document(client, uri, MARKDOWN)
            # The model takes seconds to load in a fresh process: meanwhile requests are
            # answered, the text is kept, and the status says so.
            hover = await client.text_document_hover_async(types.HoverParams(
                types.TextDocumentIdentifier(uri), types.Position(3, 5)))
            assert "no results yet (model loading)" in hover.contents.value
            change(client, uri, 2, edit(3, 0, 3, 0, "Late on, "))
            assert await server_text(client, uri) == MARKDOWN.replace("The", "Late on, The", 1)
            assert client.statuses[0].state == "loading"
            found = await diagnostics_for(client, uri, 2)
            assert sorted(d.range.start.line for d in found.diagnostics) == PROSE_LINES
            stats = await command(client, "vqedit.stats")
            assert stats["backend"]["in_process"] and stats["backend"]["documents"] == 1
            assert running_pid(paths) is None
        finally:
            await stop(client)


async def test_zero_shot_labels_from_the_settings_replace_the_topic_head():
    client = await start("neovim", options=AS_WARNINGS)
    try:
        uri = "file:///tmp/labels.md"
        open_document(client, uri, MARKDOWN)
        await diagnostics_for(client, uri, 1)
        labels = {"football": "football, goals, matches and the cup",
                  "markets": "shares, profits, companies and stock markets"}
        client.published.clear()
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={
            "vqedit": {"labels": labels, "rules": [{"label": name, "minScore": 0.0}
                                                   for name in labels]}}))
        found = await until(lambda: next((p for p in client.published if p.diagnostics and all(
            d.code in labels for d in p.diagnostics)), None), "diagnostics with the new labels")
        assert found.version == 1
        assert {d.range.start.line: d.code for d in found.diagnostics} == {
            3: "football", 11: "markets"}
        status = await until(lambda: next((s for s in reversed(client.statuses)
                                           if s.label in labels), None), "status with a label")
        assert 0.5 <= status.score <= 1
    finally:
        await stop(client)


async def test_a_daemon_killed_while_typing_or_after_the_last_keystroke_is_replaced_unasked(
        daemon_directories):
    """kill -9 of the daemon, during a burst of keystrokes and after the last one: the server
    notices the closed connection, starts a new daemon, resyncs and publishes again with no
    further keystroke; its text stays the editor's, and the last results equal a fresh pass."""
    client = await start("neovim", options=AS_WARNINGS)
    try:
        uri, text, version = "file:///tmp/killed.md", MARKDOWN, 1
        open_document(client, uri, text)
        await diagnostics_for(client, uri, 1)
        for during in (True, False, True, False):
            for keystroke in range(4):
                version += 1
                change(client, uri, version, edit(3, 0, 3, 0, "x"))
                text = text.replace("The striker", "xThe striker")
                if during and keystroke == 1:
                    os.kill(running_pid(daemon_directories), signal.SIGKILL)
            if not during:
                await diagnostics_for(client, uri, version)
                published = len(client.published)
                os.kill(running_pid(daemon_directories), signal.SIGKILL)
                await until(lambda: any(p.uri == uri and p.version == version  # noqa: B023
                                        for p in client.published[published:]),  # noqa: B023
                            "diagnostics from the new daemon")
            assert await server_text(client, uri) == text
        last = [p for p in client.published if p.uri == uri and p.version == version][-1]
        open_document(client, "file:///tmp/fresh.md", text)
        fresh = await diagnostics_for(client, "file:///tmp/fresh.md", 1)
        assert [(d.range, d.code) for d in last.diagnostics] == \
            [(d.range, d.code) for d in fresh.diagnostics]
    finally:
        await stop(client)
