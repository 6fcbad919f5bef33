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
from feast import FeatureStore, FeatureView
from feast.repo_config import RepoConfig

from feedstore.feast.definitions import repository
from feedstore.feast.offline.store import ensure_duckdb_s3
from feedstore.settings import Settings, get_settings


def repo_config(settings: Settings | None = None, repo_path: Path | None = None) -> RepoConfig:
    """``feature_store.yaml`` with the settings' endpoints; with ``offline_engine: spark`` its
    offline store is Feast's Spark store on ``feedstore.spark``'s session configuration."""
    s = settings or get_settings()
    path = Path(repo_path or s.feast.repo_path)
    text = (path / "feature_store.yaml").read_text()
    raw = yaml.safe_load(Template(text).safe_substitute({**os.environ, **s.feast_env()}))
    raw["offline_store"] = {"type": s.feast_offline_store}
    if s.feast.offline_engine == "spark":
        from feedstore.spark import spark_conf

        raw["offline_store"]["spark_conf"] = spark_conf(s)
    return RepoConfig(repo_path=path, **raw)


def store(settings: Settings | None = None, repo_path: Path | None = None) -> FeatureStore:
    """A ``FeatureStore`` on the registry, Redis and S3 named by settings, ready for reads on the
    configured offline engine (DuckDB's S3 secret set, or the Spark session started)."""
    s = settings or get_settings()
    config = repo_config(s, repo_path)
    if s.feast.offline_engine == "spark":
        from feedstore.spark import session

        session(s)
    else:
        ensure_duckdb_s3()
    return FeatureStore(repo_path=str(config.repo_path), config=config)


def close(fs: FeatureStore) -> None:
    """Releases the Postgres connections a store holds. Feast's SQL registry (``cache_mode:
    thread``) re-arms a refresh timer forever, which keeps the store, its SQLAlchemy engine and
    that engine's pooled connections alive for the life of the process: one store per call left
    ~6 connections behind per daily run. Feast's sync SDK has no close; this stops the timer and
    empties the pools. The store must not be used afterwards."""
    registry = fs._registry  # the property would create a registry just to close it
    if registry is None:
        return
    registry._start_thread_async_refresh = lambda *args: None  # a refresh in flight re-arms a no-op
    timer = getattr(registry, "registry_refresh_thread", None)
    if timer is not None:
        timer.cancel()
    for engine in {id(e): e for e in (getattr(registry, "write_engine", None),
                                      getattr(registry, "read_engine", None)) if e is not None}.values():
        engine.dispose()


def apply(fs: FeatureStore, settings: Settings | None = None) -> None:
    """``feast apply`` in process (idempotent): the contract's definitions into the registry, built
    now from ``settings``, so a pipeline run on a fresh registry needs no manual step. Objects
    removed from the contract are left alone here; the ``feast`` CLI is the tool for deletions,
    and for anything added to feature_repo/ beside the contract."""
    objects = list(repository(settings).values())
    sources = {fv.batch_source.name: fv.batch_source for fv in objects if isinstance(fv, FeatureView)}
    fs.apply([*sources.values(), *objects])
