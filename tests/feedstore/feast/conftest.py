"""The Feast repo applied once per session to the session's own registry database, Redis db
and bucket, through the real ``feast`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from feast import FeatureStore

from feedstore.settings import PROJECT_ROOT, Settings

FEAST = str(Path(sys.executable).parent / "feast")
REPO = PROJECT_ROOT / "feature_repo"


@pytest.fixture(scope="package")
def settings(stack: Settings) -> Iterator[Settings]:
    """A namespace of this package's own: its synthetic tables under ``features/`` must not
    be read by the pipeline's tests, whose Feast sources glob the same prefix."""
    from devtools.sandbox import sandbox

    with sandbox("feast") as isolated:
        yield isolated


def feast_cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.feast_env()}
    return subprocess.run([FEAST, "-c", str(REPO), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="package")
def feast_applied(settings: Settings) -> subprocess.CompletedProcess:
    result = feast_cli(settings, "apply")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="package")
def feast_planned(feast_applied, settings: Settings) -> subprocess.CompletedProcess:
    """``feast plan`` right after ``apply``, before any test materializes or pushes."""
    return feast_cli(settings, "plan")


@pytest.fixture(scope="package")
def fs(feast_planned, settings: Settings) -> Iterator[FeatureStore]:
    from feedstore.feast.store import close, store

    opened = store(settings)
    yield opened
    close(opened)
