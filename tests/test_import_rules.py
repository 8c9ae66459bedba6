"""The layering, checked on the source: an `ast` walk over every `hostcore` import (function-
level and TYPE_CHECKING imports included, since a lazy import is still a dependency).

- `wire/` imports only the standard library, msgpack and `hostcore.errors`;
- `native/` knows no host: nothing of the tree, the roles, config or telemetry;
- `web/` and `cli/` reach neither the roles (`actors/`, the tree) nor the wasm runtime, and not
  each other; the CLI's `up`/`worker` entry points are the one allowed door to the host;
- there is no cycle between packages.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "hostcore"

# The CLI starts a host or a worker node from these functions; they import the host lazily.
CLI_HOST_ENTRY_POINTS = {("hostcore.cli", "hostcore.node"), ("hostcore.cli", "hostcore.worker")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(*, typing_only: bool = True) -> dict[str, set[str]]:
    """module → the hostcore modules it imports (an `from a import b` counts as `a.b` when `b`
    is a module, else `a`); without `typing_only`, imports under `if TYPE_CHECKING:` are left out."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = set() if typing_only else {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                                          and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                                          for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t == "hostcore" or t.startswith("hostcore."))
    return graph


GRAPH = imports()


def edges(source_prefix: str) -> list[tuple[str, str]]:
    return sorted((m, t) for m, ts in GRAPH.items() if m == source_prefix or m.startswith(source_prefix + ".")
                  for t in ts)


def inside(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_graph_sees_the_tree() -> None:
    assert len(GRAPH) > 60 and ("hostcore.host", "hostcore.tree.messages") in edges("hostcore.host")


def test_wire_imports_only_errors_and_itself() -> None:
    bad = [(m, t) for m, t in edges("hostcore.wire") if not inside(t, "hostcore.wire", "hostcore.errors")]
    assert bad == []


def test_wire_imports_no_third_party_but_msgpack() -> None:
    allowed = {"msgpack", "__future__"}
    bad = []
    for path in (ROOT / "wire").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top not in allowed and top != "hostcore" and top not in _stdlib():
                    bad.append((path.name, name))
    assert bad == []


def _stdlib() -> frozenset[str]:
    import sys
    return frozenset(sys.stdlib_module_names)


def test_native_knows_no_host() -> None:
    allowed = ("hostcore.native", "hostcore.errors", "hostcore.wire")
    bad = [(m, t) for m, t in edges("hostcore.native") if t != "hostcore" and not inside(t, *allowed)]
    assert bad == []


@pytest.mark.parametrize("package", ["hostcore.web", "hostcore.cli"])
def test_web_and_cli_reach_no_role_and_no_wasm_runtime(package: str) -> None:
    banned = ("hostcore.actors", "hostcore.tree", "hostcore.native.wasm", "hostcore.native._fastcall",
              "hostcore.host", "hostcore.control.server", "hostcore.control.events", "hostcore.control.lattice",
              "hostcore.providers.supervisor", "hostcore.providers.module")
    bad = [(m, t) for m, t in edges(package) if inside(t, *banned)]
    assert bad == []
    other = "hostcore.cli" if package == "hostcore.web" else "hostcore.web"
    assert [(m, t) for m, t in edges(package) if inside(t, other)] == []


def test_the_cli_reaches_the_host_only_through_its_entry_points() -> None:
    host_modules = ("hostcore.node", "hostcore.worker")
    found = {(m.rsplit(".", 1)[0] if m.count(".") > 1 else m, t) for m, t in edges("hostcore.cli")
             if inside(t, *host_modules)}
    assert found <= CLI_HOST_ENTRY_POINTS


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (ROOT / parts[-1]).is_dir() else module


def test_no_package_cycle() -> None:
    """Type-only imports may go both ways (they are not executed)."""
    packages: dict[str, set[str]] = defaultdict(set)
    for m, ts in imports(typing_only=False).items():
        for t in ts:
            a, b = package_of(m), package_of(t)
            if a != b and b != "hostcore":
                packages[a].add(b)
    cycles = []
    for start in sorted(packages):  # depth-first search for a path back to `start`
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in packages.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert cycles == []


def test_a_worker_node_loads_neither_the_launcher_nor_the_dashboard() -> None:
    assert [(m, t) for m, t in edges("hostcore.worker") if inside(t, "hostcore.node", "hostcore.web")] == []
