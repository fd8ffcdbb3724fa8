"""Check quantship's package dependency rules: no cycle between packages, and the leaves stay leaves.

Every `import quantship.X` / `from quantship.X import ...` counts, function-local ones
included (a cycle hidden inside a function is still a cycle). A package is the first
name under `quantship` (`plan`, `serve`, ...; a top-level module such as `rundir` is
its own). Prints the graph and exits 1 naming each broken rule.

    python scripts/check_imports.py
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src" / "quantship"
# Packages that may use only these others (the shared vocabulary and the isolated gateway).
LEAVES = {
    "formats": {"errors"},
    "errors": set(),
    "rollout": {"errors"},
}
# The layers above the domain packages: only they (and the CLI) compose stages.
COMPOSERS = {"cli", "commands", "pipeline", "stages"}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "quantship" and len(parts) > 1 else None


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in SOURCE.rglob("*.py"):
        rel = path.relative_to(SOURCE.parent).with_suffix("")
        own = package_of(".".join(rel.parts))
        if own is None or own in ("__init__", "__main__"):
            continue
        graph[own]
        for module in imports_of(path):
            other = package_of(module)
            if other is not None and other != own and ((SOURCE / other).is_dir() or (SOURCE / f"{other}.py").is_file()):
                graph[own].add(other)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main() -> int:
    graph = package_graph()
    for package in sorted(graph):
        print(f"{package:>10} -> {', '.join(sorted(graph[package])) or '-'}")
    broken = [f"cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    for leaf, allowed in LEAVES.items():
        if extra := graph.get(leaf, set()) - allowed:
            broken.append(f"{leaf} may import only {', '.join(sorted(allowed)) or 'nothing'}, but imports {', '.join(sorted(extra))}")
    for package in sorted(set(graph) - COMPOSERS):
        if upward := graph[package] & COMPOSERS:
            broken.append(f"{package} is a domain package but imports {', '.join(sorted(upward))} (pass what it needs in instead)")
    for line in broken:
        print(f"import rule broken: {line}", file=sys.stderr)
    verdict = f"{len(broken)} rule(s) broken" if broken else "ok: no package cycle, leaves are leaves, domain packages import no stage"
    print(verdict, file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
