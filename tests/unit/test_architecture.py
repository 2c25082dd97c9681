"""The layering in ARCHITECTURE.md, enforced: the core is pure, imports point down.

Every import counts, at module level or inside a function, under
``TYPE_CHECKING`` or not: a lazy import that hides a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests import ROOT

PKG = ROOT / "zraft"
CORE = PKG / "core"
MAX_LINES = 500

# What the pure core may import: the standard library's pure parts, and itself.
CORE_ALLOWED = {"__future__", "abc", "collections", "dataclasses", "enum", "random", "typing"}
# The core's door: only the shell (zraft/node/) calls these on a Raft.
DOOR = {"propose", "read_index", "campaign", "transfer_leader", "has_ready", "advance"}


def modname(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, resolved to full dotted names (relative ones too)."""
    tree = ast.parse(path.read_text())
    here = modname(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            # "from zraft.api import codes" imports the module zraft.api.codes
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


MODULES = {modname(p): p for p in PKG.rglob("*.py")}


def internal_imports(path: Path) -> set[str]:
    """The zraft modules ``path`` imports (names that are not modules are dropped)."""
    return {m for m in imports(path) if m in MODULES and m != modname(path)}


def test_core_imports_only_the_allow_list_and_itself() -> None:
    for path in CORE.rglob("*.py"):
        for mod in imports(path):
            top = mod.split(".")[0]
            if mod.startswith("zraft."):
                assert mod.startswith("zraft.core"), f"{path.name} imports {mod}, above the core"
            elif mod:
                assert top in CORE_ALLOWED, f"{path.name} imports {mod}: not on the allow-list"


def test_core_uses_only_injected_randomness() -> None:
    for path in CORE.glob("*.py"):
        src = path.read_text()
        assert "random.random(" not in src and "random.randint(" not in src, path.name
        assert "random.Random(" not in src, f"{path.name} creates its own Random"


def test_storage_and_transport_import_nothing_above_the_core() -> None:
    for pkg in ("storage", "transport"):
        for path in (PKG / pkg).rglob("*.py"):
            for mod in internal_imports(path):
                ok = mod.startswith((f"zraft.{pkg}", "zraft.core")) or mod == "zraft"
                assert ok, f"zraft/{pkg}/{path.name} imports {mod}"


def test_api_payload_and_replica_never_import_the_node() -> None:
    for pkg in ("api", "payload", "replica"):
        for path in (PKG / pkg).rglob("*.py"):
            bad = {m for m in internal_imports(path) if m.startswith("zraft.node")}
            assert not bad, f"zraft/{pkg}/{path.name} imports {sorted(bad)}"


def test_snapshots_sit_between_the_layers_below_and_the_node() -> None:
    # zraft/snapshot/ uses the core, storage, transport (snapshot frames) and replica
    # (captures); only the node and above use it.
    below = ("zraft.core", "zraft.storage", "zraft.transport", "zraft.replica")
    for path in (PKG / "snapshot").rglob("*.py"):
        for mod in internal_imports(path):
            ok = mod.startswith((*below, "zraft.snapshot")) or mod == "zraft"
            assert ok, f"zraft/snapshot/{path.name} imports {mod}"
    for pkg in below:
        for path in (PKG / pkg.removeprefix("zraft.")).rglob("*.py"):
            bad = {m for m in internal_imports(path) if m.startswith("zraft.snapshot")}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_only_the_shell_calls_the_cores_door() -> None:
    for path in PKG.rglob("*.py"):
        if path.is_relative_to(CORE) or path.is_relative_to(PKG / "node"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in DOOR, (
                    f"{path.relative_to(ROOT)}:{node.lineno} calls .{node.func.attr}() "
                    "(only zraft/node/ calls the core's door)"
                )
        assert "zraft.core.raft" not in imports(path), f"{path.name} reaches into the core"


def test_there_are_no_import_cycles() -> None:
    graph = {name: internal_imports(path) for name, path in MODULES.items()}
    # A package's __init__ re-exporting its modules is not a cycle with them.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(mod: str) -> None:
        state[mod] = 1
        stack.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod)


def test_nothing_unpickles_or_evals() -> None:
    for path in PKG.rglob("*.py"):
        for mod in imports(path):
            assert mod.split(".")[0] not in {"pickle", "marshal", "shelve"}, path
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec"}, f"{path}: {node.func.id}()"


def test_no_file_is_over_500_lines() -> None:
    for folder in (PKG, ROOT / "tests", ROOT / "plugins"):
        for path in folder.rglob("*.py"):
            n = len(path.read_text().splitlines())
            assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (STYLE.md 6)"
