"""The layout rules: imports run downwards only, and nothing but the entry point imports the dev
tooling. Read from the code itself (every import, lazy ones inside functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from feedstore.settings import PROJECT_ROOT

pytestmark = pytest.mark.pure

# package -> the project packages it may import (its own included)
MAY_IMPORT: dict[str, set[str]] = {
    "feedstore": {"feedstore"},
    "feature_repo": {"feedstore"},
    "ingestion": {"ingestion", "feedstore"},
    "expectations": {"expectations", "feedstore"},
    "orchestration": {"orchestration", "ingestion", "expectations", "feedstore"},
    "devtools": {"devtools", "orchestration", "ingestion", "expectations", "feedstore"},
}
ENTRY_POINTS = {"feedstore.cli"}
"""At the top with the dev tooling: may import everything."""
PROJECT = set(MAY_IMPORT)


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")


def imported(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def violations(module: str, source: str) -> list[str]:
    if module in ENTRY_POINTS:
        return []
    package = module.split(".")[0]
    out = []
    for line, name in imported(source):
        top = name.split(".")[0]
        if top == "feedstore" and any(name == e or name.startswith(e + ".") for e in ENTRY_POINTS):
            out.append(f"{module}:{line} imports the entry point {name}")
        elif top in PROJECT and top not in MAY_IMPORT[package]:
            out.append(f"{module}:{line} imports {name} (upwards: {package} may import {sorted(MAY_IMPORT[package])})")
    return out


def _production_files() -> list[Path]:
    return [p for package in PROJECT for p in (PROJECT_ROOT / package).rglob("*.py")]


def test_imports_run_downwards():
    found = [v for p in _production_files() for v in violations(_module(p), p.read_text())]
    assert not found, "\n".join(found)


def test_every_package_is_placed():
    """A new top-level package has to be given its place in the layers."""
    packages = {p.parent.name for p in PROJECT_ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= PROJECT, packages - PROJECT


def test_the_checker_sees_an_upward_import():
    lazy = "def f():\n    from orchestration.lake import day_prefix\n"
    assert violations("feedstore.s3", lazy) == [
        "feedstore.s3:2 imports orchestration.lake.day_prefix (upwards: feedstore may import ['feedstore'])"]
    assert violations("ingestion.producer", "import devtools.stack") != []
    assert violations("orchestration.assets.online", "from feedstore.cli import app") != []
    assert violations("feedstore.cli", "from devtools.demo import run") == []


def environment_writes(source: str) -> list[int]:
    """Lines that change ``os.environ`` (assignment, update, setdefault, pop, putenv)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        target = None
        if isinstance(node, ast.Assign):
            target = next((t.value for t in node.targets if isinstance(t, ast.Subscript)), None)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("update", "setdefault", "pop", "clear") or node.func.attr == "putenv":
                target = node.func.value if node.func.attr != "putenv" else node.func
        if target is not None and ast.unparse(target) in ("os.environ", "os.putenv"):
            lines.append(node.lineno)
    return lines


def test_only_the_entry_point_writes_the_environment():
    """Settings are read from the environment; code that writes it makes one component's
    configuration leak into every other in the process."""
    found = [f"{_module(p)}:{line}" for p in _production_files() if _module(p).split(".")[0] != "devtools"
             and _module(p) not in ENTRY_POINTS for line in environment_writes(p.read_text())]
    assert not found, found


def test_the_environment_checker_sees_writes():
    code = 'import os\nos.environ["A"] = "1"\nos.environ.update(x)\nos.environ.setdefault("B", "2")\nos.putenv("C", "3")\n'
    assert environment_writes(code) == [2, 3, 4, 5]
    assert environment_writes('import os\nx = os.environ.get("A")\n') == []
