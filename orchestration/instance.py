"""Dagster's own storage: Postgres when ``FEED_DAGSTER_STORAGE_DSN`` is set (a login of its own,
``feedstore_dagster_app``, whose tables live in schema ``dagster``), else SQLite under
``$DAGSTER_HOME``. Telemetry is off either way. ``prepare_home`` writes ``dagster.yaml`` once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from feedstore.settings import PROJECT_ROOT, Settings, get_settings

DEFAULT_HOME = PROJECT_ROOT / ".dagster_home"


def sqlalchemy_url(dsn: str) -> str:
    """dagster-postgres under SQLAlchemy 2.1 needs the psycopg2 driver named in the scheme."""
    parts = urlsplit(dsn)
    return parts._replace(scheme="postgresql+psycopg2").geturl()


def instance_config(settings: Settings) -> dict:
    config: dict = {
        "telemetry": {"enabled": False},
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {"max_concurrent_runs": 2}},
    }
    if settings.pipeline.dagster_storage_dsn:
        config["storage"] = {"postgres": {"postgres_url": sqlalchemy_url(settings.dagster_login_dsn)}}
    return config


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or DEFAULT_HOME)


def prepare_home(home: Path | None = None, settings: Settings | None = None) -> Path:
    """Writes ``dagster.yaml`` when there is none; an existing one is the user's and is left alone
    (delete it to have it written again from the settings)."""
    home = Path(home or dagster_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(instance_config(settings or get_settings()), sort_keys=False))
        path.chmod(0o600)
    return home


def dagster_env(home: Path) -> dict[str, str]:
    """What Dagster's processes need; checks write their Data Docs under the home unless
    ``FEED_PIPELINE_DATA_DOCS_DIR`` says where."""
    docs = os.environ.get("FEED_PIPELINE_DATA_DOCS_DIR") or str(home / "data_docs")
    return {"DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1", "GX_ANALYTICS_ENABLED": "false",
            "FEED_PIPELINE_DATA_DOCS_DIR": docs}


def supervise(args: list[str], env: dict[str, str], grace_seconds: float) -> int:
    """Run ``dagster ARGS`` as a child in its own process group and return its exit code. SIGTERM or
    SIGINT here becomes a SIGINT there (dagster's clean shutdown; SIGINT is reset to its default in
    the child, since a background shell starts it ignored and dagster maps SIGTERM onto SIGINT's
    handler); whatever of the group is left after ``grace_seconds`` is killed."""
    exe = Path(sys.executable).parent / "dagster"
    if not exe.is_file():
        raise FileNotFoundError(f"`dagster` is missing from {exe.parent}: run ./run once to install the environment")
    child = subprocess.Popen([str(exe), *args], env={**os.environ, **env}, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stopping: list[int] = []

    def forward(signum, _frame) -> None:
        if not stopping:
            stopping.append(signum)
            _signal_group(child.pid, signal.SIGINT)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    deadline = None
    try:
        while True:
            try:
                return child.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                pass
            if stopping and deadline is None:
                deadline = time.monotonic() + grace_seconds
            if deadline is not None and time.monotonic() >= deadline:
                _signal_group(child.pid, signal.SIGKILL)
                child.wait()
                return 128 + int(stopping[0])
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _signal_group(child.pid, signal.SIGKILL)  # code servers and runs it left behind


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
