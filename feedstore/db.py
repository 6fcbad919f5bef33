"""Postgres connections, configured from settings in one place."""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

from feedstore.settings import Settings, get_settings


def connect(settings: Settings | None = None, **kwargs) -> psycopg.Connection:
    s = settings or get_settings()
    return psycopg.connect(s.postgres.dsn, connect_timeout=10, **kwargs)


def pool(settings: Settings | None = None, min_size: int = 1, max_size: int = 4) -> ConnectionPool:
    s = settings or get_settings()
    return ConnectionPool(
        s.postgres.dsn, min_size=min_size, max_size=max_size, open=True,
        kwargs={"connect_timeout": 10},
    )
