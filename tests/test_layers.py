"""One-way layers: lsp → daemon protocol → engine, with text/ a leaf under all of them. The
engine never imports upward; the language server never reaches the engine, even transitively."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What each layer may not import, and why (ARCHITECTURE.md).
FORBIDDEN = {
    "text": ["vqedit.engine", "vqedit.daemon", "vqedit.lsp", "vqedit.main", "vqedit.lab", "torch",
             "pygls", "lsprotocol", "msgpack"],
    "engine": ["vqedit.daemon", "vqedit.lsp", "vqedit.main", "vqedit.lab", "pygls", "msgpack",
               "lsprotocol"],
    "daemon": ["vqedit.lsp", "vqedit.main", "vqedit.lab", "pygls", "lsprotocol"],
    "lsp": ["vqedit.engine", "vqedit.main", "vqedit.lab", "msgpack", "torch"],
    # The product's commands; the lab (training, benchmarks, edit logs, replay) may import
    # every layer, and no layer imports it.
    "cli": ["vqedit.lab"],
}
# The language server talks to the daemon through its client and wire types; only the
# in-process backend (`vqedit lsp --in-process`) runs the daemon's worker itself, and only
# the ignored labels' file takes its place from the daemon's directories (next to its log).
LSP_DAEMON_MODULES = {"vqedit.daemon.client", "vqedit.daemon.protocol"}
IN_PROCESS = ROOT / "lsp" / "inprocess.py"
IN_PROCESS_MODULES = {"vqedit.daemon.worker", "vqedit.daemon.settings", "vqedit.daemon.paths"}
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


def test_the_lsp_reaches_the_daemon_only_through_its_client_or_the_in_process_worker():
    for path in sorted((ROOT / "lsp").rglob("*.py")):
        allowed = LSP_DAEMON_MODULES | (IN_PROCESS_MODULES if path == IN_PROCESS else set()) | (
            {"vqedit.daemon.paths"} if path == IGNORED else set())
        for name in imports(path.read_text()):
            assert not name.startswith("vqedit.daemon") or name in allowed, (
                f"{path.relative_to(ROOT)} imports {name}")


# Where each `vqedit` package lives (pyproject.toml's package-dir); other modules are cli/'s.
PACKAGES = {"vqedit.text": "text", "vqedit.engine": "engine", "vqedit.daemon": "daemon",
            "vqedit.lsp": "lsp", "vqedit.lab": "lab"}
# What the language server's process must never load: the model lives in the daemon. Only the
# in-process backend (`vqedit lsp --in-process`), imported when asked for, runs the engine.
HEAVY = ("vqedit.engine", "torch", "transformers", "tokenizers")


def module_file(name: str) -> Path | None:
    """The source file of a `vqedit` module, None for anything else."""
    if name != "vqedit" and not name.startswith("vqedit."):
        return None
    package = next((p for p in PACKAGES if name == p or name.startswith(p + ".")), "vqedit")
    folder = PACKAGES.get(package, "cli")
    rest = name[len(package):].lstrip(".").replace(".", "/")
    base = ROOT / folder / rest if rest else ROOT / folder
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def loaded_on_import(source: str, module: str) -> set[str]:
    """What importing `module` imports at once: its module-level imports (not those inside
    functions, which run when called), relative ones resolved, `from p import m` as p and p.m."""
    package = module if module_file(module).name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    statements = list(ast.parse(source).body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            name = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            statements.extend(ast.iter_child_nodes(node))
    parents = {n.rsplit(".", k)[0] for n in found for k in range(1, n.count(".") + 1)}
    return found | parents


def closure(module: str) -> set[str]:
    """Every module importing `module` loads, as far as the sources say."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        if path is not None:
            todo.extend(loaded_on_import(path.read_text(), name))
    return seen


def our_modules() -> dict[str, Path]:
    """Every module of ours by name, with its source file."""
    found = {}
    for package, folder in {"vqedit": "cli", **PACKAGES}.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            found[".".join((package, *parts)).removesuffix(".__init__")] = path
    return found


@pytest.mark.parametrize("module", sorted(name for name, path in our_modules().items()
                                          if name.startswith("vqedit.lsp") and path != IN_PROCESS))
def test_the_language_server_never_loads_the_engine_even_transitively(module):
    reached = closure(module)
    heavy = sorted(n for n in reached if any(n == h or n.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"{module} loads {heavy}"


def test_the_transitive_check_follows_imports_and_sees_the_in_process_backend():
    assert "vqedit.text.edit" in closure("vqedit.daemon.protocol")
    assert "vqedit.engine.live" in closure("vqedit.lsp.inprocess")
    assert "torch" in closure("vqedit.lsp.inprocess")


def test_the_text_and_wire_leaves_import_nothing_of_the_engine():
    assert not [n for n in closure("vqedit.daemon.protocol") | closure("vqedit.text.markdown")
                | closure("vqedit.text.lines") if n.startswith("vqedit.engine")]


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


def import_graph() -> dict[str, set[str]]:
    """Every module of ours → the modules of ours importing it loads at once (type-checking
    imports included: a tool drawing the graph sees them too)."""
    files = our_modules()
    return {name: {n for n in loaded_on_import(path.read_text(), name) if n in files and n != name}
            for name, path in files.items()}


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while not group or node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                found.append(group)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others():
    assert circles(import_graph()) == []


def test_the_circle_check_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
