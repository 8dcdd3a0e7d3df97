"""The package's imports flow one way: no cycles, and no import hidden in a function to dodge one.

A module imported inside a function, where a top-level import would close a cycle, is a
cycle all the same. Lazy imports are allowed only where they keep a process light: the CLI's
commands, the demo, and the runners behind `agentexec.__getattr__`.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "agentexec"
#: Modules whose function-level imports load heavy things on first use, by design.
LAZY_BY_DESIGN = {"agentexec", "agentexec.cli", "agentexec.demo"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The agentexec modules an import statement loads (a package's submodules included)."""
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names = {alias.name for alias in node.names}
    elif node.module and node.level == 0:
        names = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    # Every module runs the root package's __init__ (the public API) first; that edge is
    # the package's shape, not a cycle.
    return {name for name in names if name in modules and name != "agentexec"}


def _parents(module: str) -> set[str]:
    """Packages whose `__init__` runs when `module` is imported (the root package excepted:
    every module imports it, and it imports the public API)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts))}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
        edges: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _imported(node, modules):
                    edges |= {target, *_parents(target)}
        edges.discard(name)
        graph[name] = edges - _parents(name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            found = visit(target, [*path, node])
            if found:
                return found
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node, [])
        if found:
            return found
    return None


def test_no_import_cycle_at_module_level() -> None:
    assert _cycle(_graph(top_level_only=True)) is None


def test_function_level_imports_would_close_no_cycle() -> None:
    graph = _graph(top_level_only=False)
    for lazy in LAZY_BY_DESIGN:
        graph[lazy] = _graph(top_level_only=True)[lazy]
    assert _cycle(graph) is None


def test_shipped_code_does_not_import_the_testing_package() -> None:
    graph = _graph(top_level_only=False)
    offenders = {
        module
        for module, targets in graph.items()
        if not module.startswith("agentexec.testing")
        and any(t.startswith("agentexec.testing") for t in targets)
    }
    assert offenders == set()


def test_importing_agentexec_loads_no_web_framework() -> None:
    """The web router is an extra: `import agentexec` must not need (or load) FastAPI."""
    import subprocess
    import sys

    code = (
        "import sys, agentexec as ax; ax.enqueue, ax.watch, ax.activity; "
        "loaded = {'fastapi', 'agentexec.web', 'starlette'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_import_agentexec_loads_neither_the_agents_sdk_nor_sqlalchemy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, agentexec as ax\n"
        "light = sorted(m for m in ('agents', 'openai', 'sqlalchemy', 'celery.app') "
        "if m in sys.modules)\n"
        "ax.enqueue, ax.Base, ax.activity, ax.WorkerPool\n"
        "producer = 'agents' in sys.modules\n"
        "ax.OpenAIRunner\n"
        "print(light, producer, 'agents' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # Light at import; still no Agents SDK for a producer; the runners load it on first use.
    assert out.stdout.split() == ["[]", "False", "True"], out.stderr
