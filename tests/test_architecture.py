"""The layering in ARCHITECTURE.md, enforced: the core is pure, imports point down."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "zraft" / "core"

FORBIDDEN_IN_CORE = {
    "zmq",
    "os",
    "time",
    "threading",
    "socket",
    "select",
    "asyncio",
    "subprocess",
    "pluggy",
    "prometheus_client",
    "io",
    "pathlib",
    "shutil",
    "signal",
    "logging",
    "datetime",
    "pickle",
    "msgpack",
    "json",
    "secrets",
    "uuid",
}
ABOVE_CORE = {
    "zraft.node",
    "zraft.daemon",
    "zraft.cli",
    "zraft.api",
    "zraft.transport",
    "zraft.storage",
    "zraft.plugins",
    "zraft.metrics",
    "zraft.config",
}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_core_imports_no_io_and_nothing_above_it() -> None:
    for path in CORE.glob("*.py"):
        for mod in imports(path):
            top = mod.split(".")[0]
            assert top not in FORBIDDEN_IN_CORE, f"{path.name} imports {mod}"
            assert not any(mod == a or mod.startswith(a + ".") for a in ABOVE_CORE), (
                f"{path.name} imports {mod}, which is above the core"
            )


def test_core_uses_only_injected_randomness() -> None:
    for path in CORE.glob("*.py"):
        src = path.read_text()
        assert "random.random(" not in src and "random.randint(" not in src, path.name
        assert "random.Random(" not in src, f"{path.name} creates its own Random"


def test_nothing_unpickles_or_evals() -> None:
    for path in (ROOT / "zraft").rglob("*.py"):
        for mod in imports(path):
            assert mod.split(".")[0] not in {"pickle", "marshal", "shelve"}, path
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec"}, f"{path}: {node.func.id}()"


def test_no_module_is_far_over_600_lines() -> None:
    for path in (ROOT / "zraft").rglob("*.py"):
        n = len(path.read_text().splitlines())
        assert n <= 650, f"{path.relative_to(ROOT)} has {n} lines"
