"""The client-side deadline against the real server: a statement the server would run for ever
(no statement timeout set) is cut off from the client's side, in about the time given."""

from __future__ import annotations

import time

import psycopg
import pytest

from feedstore.db import connect, deadline


def test_a_statement_past_its_deadline_fails_and_the_connection_is_given_up(settings):
    conn = connect(settings, autocommit=True)
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        with deadline(conn, 1.0):
            conn.execute("SELECT pg_sleep(60)")
    assert time.monotonic() - started < 30
    assert conn.broken or conn.closed
    conn.close()
    with connect(settings) as fresh, deadline(fresh, 5.0):
        assert fresh.execute("SELECT 1").fetchone() == (1,)
