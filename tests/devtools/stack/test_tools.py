"""The list of outside programs is complete and installable: every program the code, the tests
or the benchmarks start is in ``TOOLS`` (or is a console script of the virtual environment), and
nothing looks programs up on ``PATH`` behind the list's back."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from devtools.stack.tools import TOOLS, require, venv_program
from feedstore.settings import PROJECT_ROOT

SOURCES = ["feedstore", "ingestion", "orchestration", "expectations", "devtools", "feature_repo", "tests", "bench"]
SPAWNERS = {"run", "Popen", "call", "check_call", "check_output", "execv", "execvp", "execve", "execl", "execlp"}


def _python_files() -> list[Path]:
    return [p for top in SOURCES for p in (PROJECT_ROOT / top).rglob("*.py")]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _spawned_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, program) for each subprocess/exec call whose command starts with a string literal."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _dotted(node.func).split(".")[-1] in SPAWNERS and node.args):
            continue
        if not _dotted(node.func).startswith(("subprocess.", "os.")):
            continue
        cmd = node.args[0]
        first = cmd.elts[0] if isinstance(cmd, (ast.List, ast.Tuple)) and cmd.elts else cmd
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.append((node.lineno, first.value.split()[0]))
    return found


def _calls_named(tree: ast.AST, name: str) -> list[tuple[int, ast.Call]]:
    return [(n.lineno, n) for n in ast.walk(tree) if isinstance(n, ast.Call) and _dotted(n.func).endswith(name)]


def test_every_spawned_program_is_listed():
    unlisted = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for line, program in _spawned_literals(tree):
            if program not in TOOLS:
                unlisted.append(f"{path.relative_to(PROJECT_ROOT)}:{line} runs {program!r}")
        for line, call in _calls_named(tree, "require"):
            arg = call.args[0] if call.args else None
            if isinstance(arg, ast.Constant) and arg.value not in TOOLS:
                unlisted.append(f"{path.relative_to(PROJECT_ROOT)}:{line} requires {arg.value!r}")
    assert not unlisted, "programs missing from devtools.stack.tools.TOOLS:\n" + "\n".join(unlisted)


def test_nothing_looks_programs_up_on_path_but_the_list():
    """``shutil.which`` only in tools.py: a program found on the developer's PATH is one a user lacks."""
    home = PROJECT_ROOT / "devtools" / "stack" / "tools.py"
    offenders = [f"{p.relative_to(PROJECT_ROOT)}:{line}" for p in _python_files() if p != home
                 for line, _ in _calls_named(ast.parse(p.read_text()), "shutil.which")]
    assert not offenders, offenders


def test_the_scanner_sees_a_bare_program():
    tree = ast.parse('import subprocess\nsubprocess.run(["kcatx", "-L"])\nos.execv("/bin/x", [])\n')
    assert _spawned_literals(tree) == [(2, "kcatx"), (3, "/bin/x")]


def test_every_listed_package_exists_in_debian():
    """A misspelt package name would fail only on the first machine that lacks the program."""
    require("bash")  # apt lists are fetched by the stack's first install; make sure some exist
    for tool in TOOLS.values():
        policy = subprocess.run([require("apt-cache"), "policy", tool.package], capture_output=True, text=True,
                                check=False)
        assert "Candidate:" in policy.stdout and "Candidate: (none)" not in policy.stdout, tool.package


def test_require_refuses_an_unlisted_program():
    unlisted = "definitely-not-a-tool"
    with pytest.raises(KeyError, match="TOOLS"):
        require(unlisted)


def test_required_programs_run(stack):
    """What the stack installed is found through the list, wherever its package put it."""
    for name in ("initdb", "pg_ctl", "psql", "redis-server", "redis-cli", "java", "kcat"):
        path = Path(require(name))
        assert path.is_file() and path.stat().st_mode & 0o111, name


def test_venv_programs_are_found_beside_the_interpreter():
    assert Path(venv_program("feast")).parent == Path(venv_program("dagster")).parent
    with pytest.raises(Exception, match="./run once"):
        venv_program("no-such-console-script")
