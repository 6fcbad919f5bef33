"""The ``feedstore`` command as a user meets it: its version, and bad arguments answered in one
line with no traceback (stack-free: each fails before any connection)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

pytestmark = pytest.mark.pure


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feedstore.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False, env=env)


def test_version():
    out = _cli("--version")
    assert out.returncode == 0
    assert out.stdout.startswith(f"feedstore {version('feedstore')} (feast {version('feast')}")


@pytest.mark.parametrize("args", [("ingest", "--metrics-port", "-5"), ("ingest", "--until-idle", "0"),
                                  ("serve", "--port", "70000"), ("serve", "--workers", "0"), ("validate", "items", "postgres:x", "-p", "novalue"),
                                  ("produce", "--file", "/no/such/file")])
def test_bad_arguments_get_one_line(args):
    out = _cli(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr


def _commands():
    """Every command path of the CLI, groups included."""
    import typer.main

    from feedstore.cli import app

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, (*path, name))
    return [p for p in walk(typer.main.get_command(app), ()) if p != ("feast",)]  # feast: --help is feast's


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "feedstore")
def test_help_is_plain_text(path):
    """No reStructuredText backticks and no type shown for a flag, on every command."""
    out = _cli(*path, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage:" in out.stdout
    assert "``" not in out.stdout and "<bool>" not in out.stdout, out.stdout


def test_shell_completion_script():
    """The shell is named, not detected: detection walks the parent processes, which a test run
    launched outside any shell does not have."""
    import os

    out = _cli("--show-completion", "bash", env={**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert out.returncode == 0, out.stderr
    assert "_FEEDSTORE_COMPLETE" in out.stdout and "complete " in out.stdout
    help_text = _cli("--help").stdout
    assert "--install-completion" in help_text


def test_ingest_until_idle_with_kafka_down_ends_with_one_line():
    """No broker: the consumer gives up after --until-idle with one structured error line, exit 1,
    and none of librdkafka's per-connection lines."""
    import json
    import os
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    env = {**os.environ, "FEED_KAFKA_BOOTSTRAP": dead}
    out = subprocess.run([sys.executable, "-m", "feedstore.cli", "ingest", "--until-idle", "2"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and "%3|" not in out.stderr and "rdkafka" not in out.stderr, out.stderr
    records = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    # One line each from the consumers `ingest` runs (activity and its retry topic, items, users).
    gave_up = [r for r in records if r["event"] == "ingest_gave_up"]
    assert 1 <= len(gave_up) <= 4 and all(dead in r["error"] for r in gave_up)
    # Each consumer says once that Kafka is unreachable; the process ends when the first give up.
    assert len(gave_up) <= sum(r["event"] == "kafka_unreachable" for r in records) <= 4


def test_log_level_filters_and_rejects_unknown():
    out = _cli("ingest", "--log-level", "loud")
    assert out.returncode == 2 and "loud" in out.stderr and "Traceback" not in out.stderr
