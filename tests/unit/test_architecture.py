"""The structure the code map promises: no import cycle, and a sync core that never reaches an adapter."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shared" / "calsync"
# What the sync core may import from the package: itself, the two error taxonomies of its ports, the
# store's port and records, the request limits of Directus, and logs.
CORE_MAY_IMPORT = ("calsync.sync", "calsync.directus.errors", "calsync.directus.limits", "calsync.google.errors",
                   "calsync.state.store", "calsync.logs")  # fmt: skip


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("calsync")}


def test_the_sync_core_imports_no_adapter_and_not_the_composition_root() -> None:
    offending = {}
    for path in sorted((PACKAGE / "sync").glob("*.py")):
        wrong = {
            name
            for name in _imports(path)
            if name != "calsync"
            and not any(name == ok or name.startswith(ok + ".") for ok in CORE_MAY_IMPORT)
            and name not in ("calsync.logs",)
        }
        # "from calsync import logs" reads as the module calsync.logs
        wrong -= {"calsync.logs"}
        if wrong:
            offending[path.name] = sorted(wrong)
    assert offending == {}


def _module_graph() -> dict[str, set[str]]:
    modules = {
        ".".join(("calsync", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): path
        for path in PACKAGE.rglob("*.py")
    }

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    return {
        module: {found for name in _imports(path) if (found := known(name)) and found != module}
        for module, path in modules.items()
    }


def test_no_import_cycle_in_the_core_package() -> None:
    """Function-level imports count too: a cycle hidden in a function is still a cycle of the design."""
    graph = _module_graph()
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(graph[module]):
            if target != "calsync":  # the package's __init__ holds nothing
                visit(target, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []
