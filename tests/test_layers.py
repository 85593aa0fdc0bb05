"""One-way layers: lsp → daemon protocol → engine. The engine never imports upward."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What each layer may not import, and why (ARCHITECTURE.md).
FORBIDDEN = {
    "engine": ["vqedit.daemon", "vqedit.lsp", "vqedit.main", "pygls", "msgpack", "lsprotocol"],
    "daemon": ["vqedit.lsp", "vqedit.main", "pygls", "lsprotocol"],
    "lsp": ["vqedit.engine", "vqedit.main", "msgpack", "torch"],
}
# The language server talks to the daemon through its client and wire types; only the
# in-process backend (`vqedit lsp --in-process`) runs the daemon's scheduler itself, and only
# the ignored labels' file takes its place from the daemon's directories (next to its log).
LSP_DAEMON_MODULES = {"vqedit.daemon.client", "vqedit.daemon.protocol"}
IN_PROCESS = ROOT / "lsp" / "inprocess.py"
IN_PROCESS_MODULES = {"vqedit.daemon.scheduler", "vqedit.daemon.settings", "vqedit.daemon.paths"}
IGNORED = ROOT / "lsp" / "ignored.py"
# Within the daemon only the protocol module knows the wire format, so it can change in one place.
WIRE_MODULE = ROOT / "daemon" / "protocol.py"


def imports(source: str) -> set[str]:
    tree = ast.parse(source)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_does_not_reach_up(layer):
    for path in sorted((ROOT / layer).rglob("*.py")):
        for name in imports(path.read_text()):
            for banned in FORBIDDEN[layer]:
                assert not (name == banned or name.startswith(banned + ".")), (
                    f"{path.relative_to(ROOT)} imports {name}")


def test_the_lsp_reaches_the_daemon_only_through_its_client_or_the_in_process_scheduler():
    for path in sorted((ROOT / "lsp").rglob("*.py")):
        allowed = LSP_DAEMON_MODULES | (IN_PROCESS_MODULES if path == IN_PROCESS else set()) | (
            {"vqedit.daemon.paths"} if path == IGNORED else set())
        for name in imports(path.read_text()):
            assert not name.startswith("vqedit.daemon") or name in allowed, (
                f"{path.relative_to(ROOT)} imports {name}")


def test_the_check_sees_imports():
    assert imports("import vqedit.lsp.server\nfrom vqedit.daemon import protocol\n") == {
        "vqedit.lsp.server", "vqedit.daemon"}


def test_only_the_daemon_protocol_module_imports_msgpack():
    for path in sorted(ROOT.rglob("*.py")):
        if ".venv" in path.parts or path == WIRE_MODULE or path.parent.name == "tests":
            continue
        assert "msgpack" not in imports(path.read_text()), f"{path.relative_to(ROOT)}"


# namedtuple's public methods start with an underscore so as not to clash with field names.
PUBLIC_UNDERSCORED = {"_asdict", "_replace", "_fields", "_make"}


def private_reads(source: str) -> list[str]:
    """Private attributes read from anything but our own `self`/`cls`."""
    return [ast.unparse(node) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and node.attr.startswith("_")
            and not node.attr.startswith("__") and node.attr not in PUBLIC_UNDERSCORED
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_reads_another_objects_private_attributes(layer):
    """A library's private attribute (pygls's client's `_server`, say) can go in any release."""
    for path in sorted((ROOT / layer).rglob("*.py")):
        assert not private_reads(path.read_text()), f"{path.relative_to(ROOT)}"


def test_the_check_sees_private_reads():
    assert private_reads("self._client._server\nself._own\nvalue._asdict()\n") == [
        "self._client._server"]
