"""Every path of ingestion (the activity consumer with its retry topic, the item and profile
consumers, ``feedstore load``, ``feedstore dlq replay``) reaches Postgres and Redis as the ingest
component, never as the owner or the administrator, whatever credentials its environment holds.
Seen by the stores themselves: ``pg_stat_activity``, Redis ``CLIENT LIST``, and a statement trigger
noting who wrote each table."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import psycopg
import pytest
import redis
from psycopg import sql

from feedstore.settings import PROJECT_ROOT, Settings
from tests.ingestion.conftest import ITEM_IDS, env_of, produce, valid_lines
from tests.ingestion.test_catalog_stream import send
from tests.ingestion.test_load import item, user

INGEST = ("feedstore_ingest_app", "feedstore-ingest")
WRITTEN = ("user_activity", "activity_event_ids", "users", "items", "user_follows", "dlq_replays")


@contextmanager
def writers_noted(pg: psycopg.Connection) -> Iterator[None]:
    """While open, each statement that writes a table of WRITTEN notes its login role and
    application_name in ``test_writers``."""
    pg.autocommit = True
    pg.execute("CREATE TABLE test_writers (tbl text, usr text, app text)")
    pg.execute("CREATE FUNCTION test_note_writer() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
               "SET search_path = public AS $$ BEGIN INSERT INTO test_writers "
               "VALUES (TG_TABLE_NAME, session_user, current_setting('application_name')); RETURN NULL; END $$")
    pg.execute("GRANT EXECUTE ON FUNCTION test_note_writer() TO PUBLIC")
    try:
        for table in WRITTEN:
            pg.execute(sql.SQL("CREATE TRIGGER test_note_writer AFTER INSERT OR UPDATE OR DELETE ON {} "
                               "FOR EACH STATEMENT EXECUTE FUNCTION test_note_writer()").format(sql.Identifier(table)))
        yield
    finally:
        for table in WRITTEN:
            pg.execute(sql.SQL("DROP TRIGGER IF EXISTS test_note_writer ON {}").format(sql.Identifier(table)))
        pg.execute("DROP FUNCTION test_note_writer()")
        pg.execute("DROP TABLE test_writers")


def writers(pg: psycopg.Connection) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for table, usr, app in pg.execute("SELECT tbl, usr, app FROM test_writers"):
        out.setdefault(table, set()).add((usr, app))
    return out


def _ports(pid: int, server_port: int) -> set[int]:
    """Local TCP ports of a process's connections to ``server_port`` (its threads share them). Only
    those: another process may use the same local port towards another server at the same time."""
    try:
        return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp")
                if c.raddr and c.raddr.port == server_port}
    except psutil.NoSuchProcess:
        return set()


def _sample(pg: psycopg.Connection, r: redis.Redis, pid: int, seen_pg: set, seen_redis: set) -> None:
    pg_ports = _ports(pid, pg.info.port)
    for port, usename, app in pg.execute("SELECT client_port, usename, application_name FROM pg_stat_activity "
                                         "WHERE client_port = ANY(%s)", (list(pg_ports),)):
        seen_pg.add((usename, app))
    redis_ports = _ports(pid, r.connection_pool.connection_kwargs["port"])
    for client in r.client_list():
        if int(client["addr"].rsplit(":", 1)[1]) in redis_ports:
            seen_redis.add(client["user"])


@pytest.fixture()
def topics(catalog: Settings) -> Iterator[Settings]:
    from devtools.stack.kafka import KafkaService
    from feedstore.feast.store import apply, store
    from feedstore.kafka import admin_client

    tag = uuid.uuid4().hex[:8]
    s = catalog.replace(kafka={"topic_activity": f"act-{tag}", "topic_retry": f"retry-{tag}",
                               "topic_items": f"items-{tag}", "topic_users": f"users-{tag}",
                               "topic_dlq": f"dlq-{tag}", "consumer_group": f"g-{tag}", "session_timeout_ms": 6000},
                        ingest={"sources": "activity,items,users", "unknown_grace_seconds": 2,
                                "unknown_recheck_seconds": 1})
    KafkaService(s).provision()
    apply(store(s), s)  # the streamed items' online views
    yield s
    admin_client(s.kafka.bootstrap).delete_topics([s.kafka.topic_activity, s.kafka.topic_retry, s.kafka.topic_items,
                                                   s.kafka.topic_users, s.kafka.topic_dlq])


def test_every_ingestion_path_connects_as_ingest(topics, pg, redis_client, tmp_path):
    s = topics
    env = env_of(s)  # the owner's DSN and the Redis administrator: each command must switch to its own
    assert "ingest" not in env["FEED_POSTGRES_DSN"] + env["FEED_REDIS_URL"]
    stats = psycopg.connect(s.postgres.dsn, user=s.stack.postgres_admin_user,  # client_port of others' sessions
                            password=s.stack.postgres_admin_password, autocommit=True)
    unknown_item = json.loads(valid_lines(1, seed=9)[0]) | {"item_id": "999999"}
    lines = [*valid_lines(50, seed=8), json.dumps(unknown_item).encode()]
    with writers_noted(pg):
        produce(s, lines)
        send(s, s.kafka.topic_items, [item(9_700_001), item(int(ITEM_IDS[0]), category="sports",
                                                            updated="2030-01-01T00:00:00Z")], "item_id")
        send(s, s.kafka.topic_users, [user(9_700_002), b"{not json"], "user_id")
        seen_pg: set = set()
        seen_redis: set = set()
        proc = subprocess.Popen([sys.executable, "-m", "feedstore.cli", "ingest", "--until-idle", "6"],
                                cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 240
            while proc.poll() is None and time.monotonic() < deadline:
                _sample(stats, redis_client, proc.pid, seen_pg, seen_redis)
                time.sleep(0.2)
            assert proc.wait(30) == 0, proc.stderr.read()[-2000:]
        finally:
            stats.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        assert seen_pg == {INGEST}, seen_pg
        assert seen_redis == {"feedstore-ingest"}, seen_redis

        users_file, items_file = tmp_path / "users.jsonl", tmp_path / "items.jsonl"
        users_file.write_text(json.dumps(user(9_700_003)) + "\n")
        items_file.write_text(json.dumps(item(9_700_004)) + "\n")
        for kind, path in (("users", users_file), ("items", items_file)):
            done = subprocess.run([sys.executable, "-m", "feedstore.cli", "load", kind, str(path), "--json",
                                   "--rejects", str(tmp_path / f"rejects-{kind}.jsonl")],
                                  cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-2000:]
        replayed = subprocess.run([sys.executable, "-m", "feedstore.cli", "dlq", "replay", "--json"],
                                  cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert replayed.returncode == 0, replayed.stderr[-2000:]
        assert json.loads(replayed.stdout)["replayed"] >= 1
        noted = writers(pg)
    assert set(noted) >= {"user_activity", "users", "items", "user_follows", "dlq_replays"}, noted
    assert {who for table in noted.values() for who in table} == {INGEST}, noted


def test_the_ingest_role_is_no_superuser_and_owns_nothing(pg):
    row = pg.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = %s",
                     (INGEST[0],)).fetchone()
    assert row == (False, False, False, False)
    assert pg.execute("SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner "
                      "WHERE r.rolname = %s", (INGEST[0],)).fetchone() == (0,)

