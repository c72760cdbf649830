"""Imports run one way (docs/architecture.md): flows -> tasks -> the interface, which infra and storage
implement; tasks/ imports no Ray, vLLM or store, and Prefect only in its ``shard_tasks`` modules; no
module imports one that imports it back.

Read from the source with ``ast`` (every import, also inside functions and ``TYPE_CHECKING``), so the
rule holds for the code as written, not only for what a test happens to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("flows", "tasks", "storage", "infra")
# The rule of docs/architecture.md: a module of tasks/ named ``shard_tasks`` holds Prefect tasks and may
# import Prefect; every other module of tasks/ is pure. Nothing heavier than Prefect anywhere in tasks/.
# DuckDB is allowed: curation filters in-memory Arrow tables with it, which is not the store.
HEAVY = ("ray", "prefect", "vllm", "deltalake", "torch", "httpx", "transformers", "datasets")
PREFECT_MODULE = "shard_tasks"
ALLOWED = {
    "flows": {"flows", "tasks", "storage", "infra"},
    "tasks": {"tasks"},
    "infra": {"infra", "tasks"},
    "storage": {"storage", "tasks"},
}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{a.name}" for a in node.names)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for imp in imports(name, path):
            # The longest known module the import names (``from x.y import z`` may name module x.y.z).
            parts = imp.split(".")
            for k in range(len(parts), 0, -1):
                candidate = ".".join(parts[:k])
                if candidate in mods and candidate != name:
                    targets.add(candidate)
                    break
        edges[name] = targets
    return edges


def test_packages_import_only_what_their_layer_may() -> None:
    bad = [
        f"{m} imports {t}"
        for m, targets in graph().items()
        for t in targets
        if t.split(".")[0] not in ALLOWED[m.split(".")[0]]
    ]
    assert bad == []


TASKS = sorted(m for m in modules() if m.startswith("tasks"))


@pytest.mark.parametrize("name", TASKS)
def test_tasks_import_no_framework_but_prefect_in_their_shard_tasks(name: str) -> None:
    allowed = {"prefect"} if name.rpartition(".")[2] == PREFECT_MODULE else set()
    heavy = {i.split(".")[0] for i in imports(name, modules()[name]) if i.split(".")[0] in HEAVY}
    assert heavy <= allowed, f"{name} imports {sorted(heavy - allowed)}"


def test_the_prefect_tasks_live_in_shard_tasks_modules() -> None:
    """Every module that defines a Prefect task is one of the shard_tasks modules (so the rule above
    has no hidden exception)."""
    defining = {
        name for name, path in modules().items() if name.startswith("tasks") and "@task(" in path.read_text()
    }
    assert defining and all(name.rpartition(".")[2] == PREFECT_MODULE for name in defining)


def test_no_module_imports_one_that_imports_it_back() -> None:
    edges = graph()
    cycles = []
    # Tarjan's strongly connected components: any component of two or more modules is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert cycles == []
