"""``./run`` as a new user meets it: a copy of the repository without ``.venv``, run with a bare
environment (no ``.venv/bin``, no ``uv``, no developer Python on ``PATH``). It must bootstrap from
the machine's own ``python3``, reach the stack, serve the Dagster UI and pass the Feast CLI through."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from devtools.stack.tools import require
from feedstore.settings import PROJECT_ROOT
from tests.conftest import free_port

BARE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _bare_env(**extra: str) -> dict[str, str]:
    return {"HOME": os.environ["HOME"], "PATH": BARE_PATH, "LANG": "C.UTF-8", **extra}


@pytest.fixture(scope="module")
def fresh_clone(stack, tmp_path_factory) -> Path:
    """The files a clone of this checkout has (committed or not), and nothing it built."""
    dest = tmp_path_factory.mktemp("clone") / "feedstore"
    listed = subprocess.run([require("git"), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=PROJECT_ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    assert not (dest / ".venv").exists()
    return dest


def _run(clone: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(clone / "run"), *args], cwd=clone, env=env or _bare_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _system_python_prefix() -> str:
    for d in BARE_PATH.split(":"):
        if (Path(d) / "python3").exists():
            return subprocess.run([str(Path(d) / "python3"), "-c", "import sys; print(sys.base_prefix)"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    pytest.fail("no python3 on the system PATH")


def test_bootstraps_from_the_system_python_and_reaches_the_stack(fresh_clone):
    status = _run(fresh_clone, "stack", "status")
    assert status.returncode == 0, status.stderr[-3000:]
    for service in ("postgres", "redis ", "seaweedfs", "kafka"):  # and the Redis Cluster when one runs
        assert re.search(rf"│ {service}\s*│ up ", status.stdout), status.stdout
    venv_python = fresh_clone / ".venv" / "bin" / "python"
    base = subprocess.run([str(venv_python), "-c", "import sys; print(sys.base_prefix)"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert base == _system_python_prefix()
    pinned = re.search(r"^UV_VERSION=(\S+)$", (fresh_clone / "run").read_text(), re.M).group(1)
    uv = subprocess.run([str(fresh_clone / ".venv" / "bin" / "uv"), "--version"], capture_output=True, text=True)
    assert uv.stdout.split()[:2] == ["uv", pinned]


def test_a_second_run_reuses_the_environment(fresh_clone):
    _run(fresh_clone, "stack", "status")
    marker = fresh_clone / ".venv" / "marker"
    marker.touch()
    again = _run(fresh_clone, "stack", "env")
    assert again.returncode == 0 and "export FEED_POSTGRES_DSN=" in again.stdout
    assert marker.exists()



def test_dagster_ui_serves_without_the_venv_on_path(fresh_clone):
    port = free_port()
    log = fresh_clone / "dagster-dev.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(fresh_clone / "run"), "dagster", "-h", "127.0.0.1", "-p", str(port)],
                                cwd=fresh_clone, env=_bare_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline, answered = time.monotonic() + 240, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answered = requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2)
                if answered.status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert answered is not None and answered.status_code == 200, log.read_text()[-3000:]
        assert "dagster_webserver_version" in answered.json()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _namespace_env() -> dict[str, str]:
    """The test session's own endpoints (so Feast writes into its sandbox), nothing else of the shell."""
    return {k: v for k, v in os.environ.items() if k.startswith("FEED_") and not k.startswith("FEED_FEAST_")}


def test_feast_cli_through_run_needs_no_exports(fresh_clone, settings):
    plan = _run(fresh_clone, "feast", "plan", env=_bare_env(**_namespace_env()))
    assert plan.returncode == 0, plan.stdout[-2000:] + plan.stderr[-2000:]
    assert "user_activity_features" in plan.stdout


def test_plain_feast_cli_without_the_environment_says_what_to_do(fresh_clone, settings):
    _run(fresh_clone, "stack", "status")
    feast = subprocess.run([str(fresh_clone / ".venv" / "bin" / "feast"), "-c", "feature_repo", "plan"],
                           cwd=fresh_clone, env=_bare_env(**_namespace_env()), capture_output=True, text=True,
                           timeout=300, check=False)
    assert feast.returncode == 2
    assert "Traceback" not in feast.stderr
    lines = [line for line in feast.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "./run feast" in lines[0] and "stack env" in lines[0], feast.stderr
