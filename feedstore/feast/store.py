"""The configured ``FeatureStore`` for ``feature_repo/``, from settings rather than the shell.

``feature_store.yaml`` names ``${FEED_FEAST_REGISTRY_URL}`` and ``${FEED_FEAST_REDIS}`` so the
``feast`` CLI works after ``eval "$(feedstore stack env)"``; ``store()`` substitutes the same
names from ``get_settings()`` so code never depends on what the shell exported.
"""

from __future__ import annotations

import os
from pathlib import Path
from string import Template

import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

from feedstore.feast.offline.store import ensure_duckdb_s3
from feedstore.settings import Settings, get_settings


def repo_config(settings: Settings | None = None, repo_path: Path | None = None) -> RepoConfig:
    s = settings or get_settings()
    path = Path(repo_path or s.feast.repo_path)
    text = (path / "feature_store.yaml").read_text()
    raw = yaml.safe_load(Template(text).safe_substitute({**os.environ, **s.feast_env()}))
    return RepoConfig(repo_path=path, **raw)


def store(settings: Settings | None = None, repo_path: Path | None = None) -> FeatureStore:
    """A ``FeatureStore`` on the registry, Redis and S3 named by settings, ready for DuckDB reads."""
    s = settings or get_settings()
    config = repo_config(s, repo_path)
    ensure_duckdb_s3()
    return FeatureStore(repo_path=str(config.repo_path), config=config)


def apply(fs: FeatureStore) -> None:
    """``feast apply`` in process (idempotent): the repo's definitions into the registry, so a
    pipeline run on a fresh registry needs no manual step. Objects removed from the repo are
    left alone here; the ``feast`` CLI is the tool for deletions."""
    import contextlib
    import sys

    from feast.repo_operations import parse_repo

    repo_path = Path(fs.repo_path).resolve()
    if str(repo_path) not in sys.path:
        sys.path.insert(0, str(repo_path))
    # The repo's modules read settings (the bucket in source paths) when imported; a cached
    # import would apply the first namespace's paths to every later one in this process.
    for name, module in list(sys.modules.items()):
        if Path(getattr(module, "__file__", None) or "/").resolve().is_relative_to(repo_path):
            del sys.modules[name]
    with contextlib.chdir(repo_path):
        repo = parse_repo(repo_path)
    fs.apply([*repo.entities, *repo.data_sources, *repo.feature_views, *repo.stream_feature_views,
              *repo.on_demand_feature_views, *repo.feature_services])
