"""Dagster resources for the stack. Each one is configured from the environment through
``feedstore.settings`` (the only place endpoints are read); a field set in Dagster config
overrides the environment for that resource only."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import redis
from pydantic import PrivateAttr

from feedstore.settings import Settings, get_settings


class _FromSettings(dg.ConfigurableResource):
    def settings(self) -> Settings:
        """The environment's settings as the pipeline's credentials, with the fields this
        resource's Dagster config sets."""
        overrides = {group: {k: v for k, v in fields.items() if v is not None}
                     for group, fields in self._overrides().items()}
        return get_settings().as_component("pipeline").replace(**overrides)

    def _overrides(self) -> dict[str, dict[str, Any]]:
        return {}


class PostgresResource(_FromSettings):
    """The warm tier (``FEED_POSTGRES_DSN``)."""

    dsn: str | None = None

    def _overrides(self) -> dict[str, dict[str, Any]]:
        return {"postgres": {"dsn": self.dsn}}

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        from feedstore.db import connect

        return connect(self.settings(), **kwargs)


class S3Resource(_FromSettings):
    """The cold tier (``FEED_S3_ENDPOINT``, ``FEED_S3_BUCKET``, ``AWS_*``)."""

    endpoint: str | None = None
    bucket: str | None = None

    def _overrides(self) -> dict[str, dict[str, Any]]:
        return {"s3": {"endpoint": self.endpoint, "bucket": self.bucket}}

    def duckdb(self, memory_limit: str | None = None):
        from feedstore.s3 import duckdb_connection

        return duckdb_connection(self.settings(), memory_limit=memory_limit)

    def engine(self, memory_limit: str | None = None):
        """What the feature SQL runs on (``FEED_PIPELINE_ENGINE``): DuckDB, or the process's Spark
        session reading the lake over ``s3a://`` with these settings' keys."""
        from orchestration.engines import connect

        return connect(self.settings(), memory_limit=memory_limit)


class RedisResource(_FromSettings):
    """The hot tier (``FEED_REDIS_URL``); Feast's online store lives in it."""

    url: str | None = None

    def _overrides(self) -> dict[str, dict[str, Any]]:
        return {"redis": {"url": self.url}}

    def client(self) -> redis.Redis:
        from feedstore.redis_client import connect

        return connect(self.settings())


class FeastResource(_FromSettings):
    """The Feast repo (``feature_repo/``): online materialization and point-in-time retrieval.
    One store per execution (a run in process, a step in its own process), closed at its end: a
    store holds a registry engine and its pool of Postgres connections until closed."""

    repo_path: str | None = None
    _store: Any = PrivateAttr(default=None)

    def _overrides(self) -> dict[str, dict[str, Any]]:
        return {"feast": {"repo_path": self.repo_path}}

    def store(self):
        """The configured store, with the repo's definitions applied once per execution."""
        from feedstore.feast.store import apply, store

        if self._store is None:
            settings = self.settings()
            self._store = store(settings)
            try:
                apply(self._store, settings)
                self._store.refresh_registry()  # the cache was read before apply wrote the definitions
            except BaseException:
                self.close()
                raise
        return self._store

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        """Closes the store (done at the end of each execution; call it when used outside Dagster)."""
        from feedstore.feast.store import close

        fs, self._store = self._store, None
        if fs is not None:
            close(fs)

    def materialize(self, start, end, views: list[str]) -> None:
        """Feast's materialization semantics with our column-wise Redis writer."""
        from feedstore.feast.engine import materialize

        materialize(self.store(), views, start, end)

    def historical_features(self, entity_df, feature_service: str):
        """Point-in-time join of ``entity_df`` (entity keys + ``event_timestamp``) as Arrow."""
        fs = self.store()
        return fs.get_historical_features(entity_df=entity_df,
                                          features=fs.get_feature_service(feature_service)).to_arrow()


class GreatExpectationsResource(dg.ConfigurableResource):
    """Runs a suite of ``expectations/`` on a frame, an Arrow table or an ``s3://`` prefix.
    With ``docs_dir`` (default: ``FEED_PIPELINE_DATA_DOCS_DIR``), each validation also writes its
    Data Docs site in a folder of it."""

    docs_dir: str | None = None

    def validate(self, suite: str, data: Any, **params: Any):
        from expectations import validate

        docs = None
        root = self.docs_dir or get_settings().pipeline.data_docs_dir
        if root:
            docs = Path(root) / docs_folder(suite, data)
        return validate(suite, data, docs_dir=docs, **params)


def docs_folder(suite: str, data: Any) -> str:
    """``suite--features-user_embedding-dt-2026-01-01`` for a lake prefix, ``suite--<random>`` else."""
    if isinstance(data, str):
        where = data.split("://", 1)[-1].split("/", 1)[-1]
        return f"{suite}--" + (re.sub(r"[^A-Za-z0-9_.]+", "-", where).strip("-") or "root")
    return f"{suite}--{type(data).__name__.lower()}-{uuid.uuid4().hex[:8]}"


def resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "postgres": PostgresResource(),
        "s3": S3Resource(),
        "redis": RedisResource(),
        "feast": FeastResource(),
        "gx": GreatExpectationsResource(),
    }
