"""Postgres connections, configured from settings in one place."""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

from feedstore.settings import Settings, get_settings

# A peer that vanishes (a half-open connection, a stalled server) is noticed in seconds, not after
# the kernel's two hours; none of this cuts a slow query short.
KEEPALIVES = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3, "tcp_user_timeout": 30_000}


def connect(settings: Settings | None = None, statement_timeout_ms: int | None = None, **kwargs) -> psycopg.Connection:
    """``statement_timeout_ms``: cancel any statement running longer (the consumer's, whose batches
    must not hang on a stalled server)."""
    s = settings or get_settings()
    if statement_timeout_ms:
        kwargs["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    return psycopg.connect(s.postgres.dsn, **{**KEEPALIVES, **kwargs})


def pool(settings: Settings | None = None, min_size: int = 1, max_size: int = 4) -> ConnectionPool:
    s = settings or get_settings()
    return ConnectionPool(
        s.postgres.dsn, min_size=min_size, max_size=max_size, open=True,
        kwargs=dict(KEEPALIVES),
    )
