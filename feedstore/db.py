"""Postgres connections, configured from settings in one place."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def deadline(conn: psycopg.Connection, seconds: float) -> Iterator[None]:
    """Breaks the connection if the block takes longer than ``seconds``. A server that stalls (or a
    network that swallows the bytes) never answers a statement timeout, and keepalives are answered
    by whatever holds the socket; only the client can give up. The block then fails with
    ``psycopg.OperationalError`` and the connection is unusable."""
    def cut() -> None:
        try:
            socket.socket(fileno=_dup(conn)).shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _dup(conn: psycopg.Connection) -> int:
    import os

    return os.dup(conn.pgconn.socket)
