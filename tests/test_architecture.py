"""The top-level packages form a DAG, and nothing shipped imports the lab or the tests.

    foundation  <-  ipam  <-  cni_plugin
         ^           ^
         +--------- speaker          lab -> all of them       tests -> everything

Every import counts, also one inside a function (a lazy import is still a
dependency).  A new edge that is not in ALLOWED fails here with the module and
line that made it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ALLOWED: dict[str, set[str]] = {
    "foundation": set(),
    "ipam": {"foundation"},
    "cni_plugin": {"foundation", "ipam"},
    "speaker": {"foundation", "ipam"},
    "lab": {"foundation", "ipam", "cni_plugin", "speaker"},
}
# Inside foundation, its parts are layered too.
FOUNDATION_ALLOWED: dict[str, set[str]] = {
    "addresses": set(),
    "files": set(),
    "cni": set(),
    "netlink": {"cni"},
    "inotify": set(),
    "metrics": {"addresses"},
    "kube": {"addresses", "netlink", "files", "inotify"},
}
OURS = set(ALLOWED) | {"tests", "install", "bench"}


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) of every import in the file at `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, node.lineno
            for alias in node.names:  # `from foundation import netlink` imports a module
                yield f"{module}.{alias.name}", node.lineno


def violations() -> list[str]:
    found = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for module, line in imports(path):
                top = module.split(".")[0]
                if top in OURS and top != package and top not in allowed:
                    found.append(f"{path.relative_to(ROOT)}:{line}: {package} imports {module}")
                parts = module.split(".")
                if package == "foundation" and top == "foundation" and len(parts) > 1:
                    here = path.relative_to(ROOT / "foundation").parts[0].removesuffix(".py")
                    there = parts[1]
                    if (here in FOUNDATION_ALLOWED and there in FOUNDATION_ALLOWED
                            and there != here and there not in FOUNDATION_ALLOWED[here]):
                        found.append(f"{path.relative_to(ROOT)}:{line}: foundation.{here} "
                                     f"imports {module}")
    return found


def test_packages_form_the_allowed_dag() -> None:
    assert violations() == []


def test_allowed_edges_have_no_cycle() -> None:
    state: dict[str, int] = {}

    def visit(node: str, graph: dict[str, set[str]]) -> None:
        assert state.get(node) != 1, f"cycle through {node}"
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in graph[node]:
            visit(nxt, graph)
        state[node] = 2

    for graph in (ALLOWED, FOUNDATION_ALLOWED):
        state.clear()
        for node in graph:
            visit(node, graph)


def test_the_check_sees_a_new_cycle(tmp_path: Path) -> None:
    """The walker finds a lazy import inside a function (what a cycle hides in)."""
    probe = ROOT / "foundation" / "_probe_for_test.py"
    probe.write_text("def f():\n    from speaker import plan\n", encoding="utf-8")
    try:
        assert any("_probe_for_test.py:2: foundation imports speaker" in v
                   for v in violations())
    finally:
        probe.unlink()
