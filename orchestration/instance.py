"""Dagster's own storage: Postgres when ``FEED_DAGSTER_STORAGE_DSN`` is set, else SQLite under
``$DAGSTER_HOME``. Telemetry is off either way. ``prepare_home`` writes ``dagster.yaml``."""

from __future__ import annotations

import os
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
        config["storage"] = {"postgres": {"postgres_url": sqlalchemy_url(settings.pipeline.dagster_storage_dsn)}}
    return config


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or DEFAULT_HOME)


def prepare_home(home: Path | None = None, settings: Settings | None = None) -> Path:
    home = Path(home or dagster_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(instance_config(settings or get_settings()), sort_keys=False))
    path.chmod(0o600)
    return home


def dagster_env(home: Path) -> dict[str, str]:
    return {"DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1", "GX_ANALYTICS_ENABLED": "false"}
