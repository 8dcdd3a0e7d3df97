"""`agentexec.testing` is a light public face, and shipped code never imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import agentexec
import agentexec.testing

PACKAGE = Path(agentexec.__file__).resolve().parent
TESTING = PACKAGE / "testing"


def test_every_public_name_resolves() -> None:
    names = agentexec.testing.__all__
    assert len(names) == len(set(names)), "duplicates in __all__"
    for name in names:
        assert getattr(agentexec.testing, name) is not None, name
        assert name in dir(agentexec.testing), name


def test_unknown_name_is_an_attribute_error() -> None:
    assert not hasattr(agentexec.testing, "no_such_helper")


def test_import_does_not_load_the_agents_sdk() -> None:
    code = (
        "import sys\n"
        "import agentexec.testing\n"
        "loaded = sorted(m for m in sys.modules if m == 'agents' or m.startswith('agents.'))\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"agents SDK imported: {result.stdout.strip()}"


def _imported_modules(path: Path) -> list[str]:
    """Every module an `import` or `from ... import` names anywhere in a file, made absolute.

    `from x import y` counts as importing both `x` and `x.y` (`y` may be a module).
    """
    package = list(path.relative_to(PACKAGE.parent).parent.parts)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    modules: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            modules.append(module)
            modules.extend(f"{module}.{alias.name}" for alias in node.names)
    return modules


def test_the_import_scan_sees_imports() -> None:
    assert "agentexec.testing.openai_script" in _imported_modules(TESTING / "openai_server.py")
    assert "agentexec.processes" in _imported_modules(TESTING / "plugin.py")


def test_shipped_code_does_not_import_testing() -> None:
    offenders: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(TESTING):
            continue
        for module in _imported_modules(path):
            if module == "agentexec.testing" or module.startswith("agentexec.testing."):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {module}")
    assert offenders == []
