"""The ``feedstore`` command as a user meets it: its version, and bad arguments answered in one
line with no traceback (stack-free: each fails before any connection)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

pytestmark = pytest.mark.pure


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedstore.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_version():
    out = _cli("--version")
    assert out.returncode == 0
    assert out.stdout.startswith(f"feedstore {version('feedstore')} (feast {version('feast')}")


@pytest.mark.parametrize("args", [("ingest", "--metrics-port", "-5"), ("ingest", "--until-idle", "0"),
                                  ("serve", "--port", "70000"), ("validate", "items", "postgres:x", "-p", "novalue"),
                                  ("produce", "--file", "/no/such/file")])
def test_bad_arguments_get_one_line(args):
    out = _cli(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
