"""A real `vqedit lsp` over stdio, driven by pytest-lsp's client with a real editor's profile.

The server is started the way editors start it (`python -m vqedit lsp`), with private XDG
directories (daemon_harness.private_dirs), so the daemon it spawns is the test's own: it never
meets the user's, and is stopped when the directories go away.
"""

import asyncio
import os
import sys
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, register_lsp_features

# Profiles of real clients, as pytest-lsp recorded them: Neovim offers UTF-8 positions, VS Code
# only UTF-16.
PROFILES = ["neovim", "visual-studio-code"]
TIMEOUT_S = 300  # the real student loads in seconds; on a shared 2-core machine a pass may take 1 s
TOPICS = ["business", "entertainment", "politics", "sport", "tech"]  # the shipped head's labels
# Every paragraph label is reported, so the diagnostics show exactly which paragraphs count.
EVERY_LABEL = {"rules": [{"label": label, "minScore": 0.0} for label in TOPICS]}
FIRST = "The striker scored twice in the second half and the home side won the cup."  # sport
SECOND = "Shares in the chip maker rose after strong quarterly profits."  # business


class Client(LanguageClient):
    """pytest-lsp's client, also keeping every publishDiagnostics and vqedit/status in order."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[types.PublishDiagnosticsParams] = []
        self.statuses: list[Any] = []

    @classmethod
    def make(cls) -> "Client":
        client = cls()
        register_lsp_features(client, {**DEFAULT_CLIENT_FEATURES,
                                       types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS: _published,
                                       "vqedit/status": _status})
        # lsprotocol reads any code action with a `command` as a Command, dropping its kind
        # and arguments; tell them apart the way the specification does (a Command's
        # `command` is a string).
        converter = client.protocol._converter
        converter.register_structure_hook(
            types.Command | types.CodeAction,
            lambda value, _: converter.structure(value, types.Command if isinstance(
                value.get("command"), str) else types.CodeAction))
        return client


# pygls hands the client to a handler whose first parameter is annotated with its class.
def _published(client: Client, params: types.PublishDiagnosticsParams) -> None:
    client.published.append(params)


def _status(client: Client, params: Any) -> None:
    client.statuses.append(params)


async def start(profile: str, options: dict[str, Any] | None = None,
                configuration: dict[str, Any] | None = None,
                server_args: tuple[str, ...] = (),
                encodings: list[str] | None = None) -> Client:
    """A client connected to a new server process, initialized as `profile` would.

    `configuration` is what the client answers to `workspace/configuration` for `vqedit`;
    `encodings` replaces the profile's offered position encodings.
    """
    config = ClientServerConfig(server_command=[sys.executable, "-m", "vqedit", "lsp",
                                                *server_args],
                                server_env=dict(os.environ), client_factory=Client.make)
    client = await config.start()
    client.set_configuration(configuration or {}, section="vqedit")
    capabilities = client_capabilities(profile)
    if encodings is not None:
        capabilities.general = types.GeneralClientCapabilities(position_encodings=encodings)
    await client.initialize_session(types.InitializeParams(
        capabilities=capabilities, initialization_options=options,
        client_info=types.ClientInfo(name=profile)))
    return client


async def stop(client: LanguageClient) -> None:
    await client.shutdown_session()
    await client.stop()


def open_document(client: LanguageClient, uri: str, text: str, language: str = "markdown",
                  version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))


def change(client: LanguageClient, uri: str, version: int,
           *changes: types.TextDocumentContentChangeEvent) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(uri=uri, version=version), list(changes)))


def edit(line: int, character: int, end_line: int, end_character: int,
         text: str) -> types.TextDocumentContentChangePartial:
    return types.TextDocumentContentChangePartial(
        range=types.Range(types.Position(line, character), types.Position(end_line, end_character)),
        text=text)


async def until(condition, what: str) -> Any:
    """Poll `condition` on the event loop until it gives something true."""
    async def wait() -> Any:
        while not (found := condition()):
            await asyncio.sleep(0.02)
        return found

    try:
        return await asyncio.wait_for(wait(), TIMEOUT_S)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def diagnostics_for(client: Client, uri: str, version: int,
                          lines: list[int] | None = None) -> types.PublishDiagnosticsParams:
    """The first publishDiagnostics for `uri` at `version` (with diagnostics starting at
    `lines`, if given: results of an older version, moved onto this one, may come first and
    lack the paragraphs edited since)."""
    return await until(lambda: next((p for p in client.published
                                     if p.uri == uri and p.version == version and (
                                         lines is None or lines == sorted(
                                             d.range.start.line for d in p.diagnostics))),
                                    None),
                       f"diagnostics of {uri} v{version}")


async def status_for(client: Client, uri: str, version: int) -> Any:
    """The first vqedit/status for `uri` at `version` in state ready with a label."""
    return await until(lambda: next((s for s in client.statuses if s.uri == uri
                                     and s.version == version and s.label is not None), None),
                       f"status of {uri} v{version}")


async def command(client: LanguageClient, name: str, *arguments: Any) -> Any:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=name, arguments=list(arguments)))


async def server_text(client: LanguageClient, uri: str) -> str:
    """The server's own copy (the `vqedit.text` debugging command)."""
    found = await command(client, "vqedit.text", uri)
    return found["text"]


def errors(client: LanguageClient) -> list[str]:
    return [m.message for m in client.log_messages if m.type == types.MessageType.Error]
