"""Each component's credentials: what it must not do, refused by the store itself (Postgres,
Redis, S3, the SeaweedFS filer), and the components seen under their own roles."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
import redis
from botocore.exceptions import ClientError

from feedstore.s3 import s3_client
from feedstore.settings import Settings


def _pg(settings: Settings, component: str) -> psycopg.Connection:
    return psycopg.connect(settings.as_component(component).postgres.dsn, autocommit=True)


def _refused(conn: psycopg.Connection, statement: str, params=()) -> str:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement, params)
    return str(caught.value)


TODAY = date.today()

REFUSED = {  # component -> statements its Postgres role must not run
    "ingest": ["CREATE TABLE x (a int)", "DELETE FROM user_activity",
               "SELECT * FROM model_metadata", "SELECT user_id FROM user_activity", "TRUNCATE users",
               "SELECT drop_activity_partitions_before('9999-01-01')",
               "SELECT drop_activity_partitions('2000-01-01', '2000-02-01')",
               "SELECT ensure_activity_partitions('2200-01-01', '2201-02-04')",
               "UPDATE feast_metadata SET metadata_value = 'x'"],
    "pipeline": ["CREATE TABLE x (a int)", "DROP TABLE users", "ALTER TABLE items ADD COLUMN x int",
                 "SELECT drop_activity_partitions_before('9999-01-01')",
                 f"SELECT drop_activity_partitions('{TODAY - timedelta(days=10)}', '{TODAY}')",
                 "SELECT ensure_activity_partitions('2200-01-01', '2200-01-02')",
                 "INSERT INTO user_activity (event_id, user_id, item_id, event_type, timestamp) "
                 "VALUES (gen_random_uuid(), 1, 1, 'view', now())"],
    "serve": ["SELECT * FROM users", "SELECT * FROM user_activity", "CREATE TEMP TABLE t (a int)",
              "INSERT INTO feast_metadata VALUES ('p', 'k', 'v', 0)", "CREATE TABLE x (a int)"],
    "reader": ["CREATE TEMP TABLE t (a int)", "DELETE FROM users", "INSERT INTO items (item_id) VALUES (1)",
               "CREATE TABLE x (a int)", "SELECT ensure_activity_partitions(current_date, current_date)"],
}


@pytest.mark.parametrize("component", list(REFUSED))
def test_postgres_refuses_what_a_component_must_not_do(settings, component):
    with _pg(settings, component) as conn:
        row = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user")
        assert row.fetchone() == (False, False, False)
        for statement in REFUSED[component]:
            message = _refused(conn, statement)
            assert any(w in message for w in ("permission denied", "must be owner", "may be created from", "kept")), (
                statement, message)


def test_what_each_component_needs_is_allowed(settings):
    with _pg(settings, "ingest") as conn:
        assert conn.execute("SELECT ensure_activity_partitions(current_date, current_date + 1)").fetchone()[0] >= 0
        conn.execute("CREATE TEMP TABLE staging (a int)")  # the consumer's staging table
        conn.execute("SELECT count(*) FROM users").fetchone()
    with _pg(settings, "pipeline") as conn:
        conn.execute("SELECT count(*) FROM user_activity").fetchone()
        conn.execute("SELECT * FROM drop_activity_partitions(%s, %s)", (TODAY - timedelta(days=500),
                                                                         TODAY - timedelta(days=400)))
    with _pg(settings, "serve") as conn:
        conn.execute("SELECT count(*) FROM feature_views").fetchone()
    with _pg(settings, "reader") as conn:
        conn.execute("SELECT count(*) FROM user_activity").fetchone()


def test_public_can_neither_connect_nor_make_temp_tables(settings, pg):
    from devtools.stack.postgres import PostgresService

    dbname = pg.info.dbname
    grants = pg.execute("SELECT has_database_privilege('public', %s, 'CONNECT'), "
                        "has_database_privilege('public', %s, 'TEMP')", (dbname, dbname)).fetchone()
    assert grants == (False, False)
    with psycopg.connect(PostgresService(settings).admin_dsn()) as admin:
        rules = admin.execute("SELECT type, auth_method FROM pg_hba_file_rules").fetchall()
    assert rules and not [r for r in rules if r[1] == "trust"], rules


def test_every_login_is_scram_and_no_superuser(settings):
    """The owner's, each runtime component's and Dagster's storage login: a SCRAM-SHA-256
    password, no superuser."""
    from urllib.parse import unquote, urlsplit

    from devtools.stack.postgres import PostgresService
    from feedstore.settings import RUNTIME_COMPONENTS

    dsns = [settings.postgres.dsn, *(settings.postgres.dsn_for(c) for c in RUNTIME_COMPONENTS),
            settings.dagster_login_dsn]
    users = sorted({unquote(urlsplit(dsn).username or "") for dsn in dsns})
    assert len(users) == 2 + len(RUNTIME_COMPONENTS), users
    with psycopg.connect(PostgresService(settings).admin_dsn()) as admin:
        rows = admin.execute("SELECT rolname, rolcanlogin, rolsuper, left(rolpassword, 14) FROM pg_authid "
                             "WHERE rolname = ANY(%s) ORDER BY rolname", (users,)).fetchall()
        assert admin.execute("SHOW password_encryption").fetchone() == ("scram-sha-256",)
    assert rows == [(u, True, False, "SCRAM-SHA-256$") for u in users]


def test_the_bounded_drop_takes_only_reconciled_days(settings, pg):
    old = TODAY - timedelta(days=40)  # inside the creation window, past the kept days
    pg.execute("SELECT ensure_activity_partitions(%s, %s)", (old, old + timedelta(days=1)))
    pg.execute("INSERT INTO users (user_id, created_at) VALUES (990001, now()) ON CONFLICT DO NOTHING")
    for day in (old, old + timedelta(days=1)):
        pg.execute("INSERT INTO user_activity (event_id, user_id, item_id, event_type, timestamp) "
                   "VALUES (gen_random_uuid(), 990001, 1, 'view', %s)", (day,))
    with _pg(settings, "pipeline") as conn:
        conn.execute("INSERT INTO activity_reconciled_days (day, row_count) VALUES (%s, 1), (%s, 5) "
                     "ON CONFLICT (day) DO UPDATE SET row_count = excluded.row_count", (old, old + timedelta(days=1)))
        dropped = [r[0] for r in conn.execute("SELECT * FROM drop_activity_partitions(%s, %s)",
                                              (old, old + timedelta(days=2)))]
    assert dropped == [f"user_activity_p{old:%Y%m%d}"]  # the next day's count (1) is not the reconciled 5
    assert pg.execute("SELECT to_regclass(%s)", (f"user_activity_p{old + timedelta(days=1):%Y%m%d}",)).fetchone()[0]


def _redis(settings: Settings, component: str) -> redis.Redis:
    return redis.Redis.from_url(settings.as_component(component).redis.url)


REDIS_REFUSED = {
    "ingest": [("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("SET", "other:1", "x"),
               ("HSET", "feed_ranking:{item_id=1}:item_engagement_features", "f", "1")],
    "pipeline": [("FLUSHALL",), ("SET", "user:1", "x"), ("ACL", "LIST"), ("CONFIG", "SET", "maxmemory", "1")],
    "serve": [("HSET", "feed_ranking:{user_id=1}:user_embedding", "f", "1"), ("HGETALL", "user:1"), ("DEL", "x"),
              ("FLUSHDB",), ("SCRIPT", "FLUSH")],
}


@pytest.mark.parametrize("component", list(REDIS_REFUSED))
def test_redis_refuses_keys_and_commands_outside_a_components_acl(settings, component):
    client = _redis(settings, component)
    assert client.ping()
    for command in REDIS_REFUSED[component]:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)


def test_redis_allows_each_component_its_own(settings):
    _redis(settings, "ingest").hincrby("user:424242", "total_events", 1)
    _redis(settings, "pipeline").hset("feed_ranking:{item_id=7}:item_engagement_features", "f", "1")
    assert _redis(settings, "serve").hget("feed_ranking:{item_id=7}:item_engagement_features", "f") == b"1"
    assert _redis(settings, "reader").hget("user:424242", "total_events") == b"1"


def test_the_redis_cluster_refuses_the_same_on_every_node(settings, redis_cluster):
    """The cluster's nodes have the server's ACL users (each node its own), the default user off."""
    from urllib.parse import urlsplit

    from feedstore.redis_client import connect

    on_cluster = redis_cluster.settings_for(settings)
    for port in redis_cluster.ports:
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port).ping()
        for component, command in (("pipeline", ("FLUSHALL",)), ("serve", ("CONFIG", "GET", "*")),
                                   ("ingest", ("KEYS", "*")), ("reader", ("ACL", "LIST"))):
            url = urlsplit(on_cluster.as_component(component).redis.url)
            credentials = url.netloc.rpartition("@")[0]
            node = redis.Redis.from_url(url._replace(netloc=f"{credentials}@127.0.0.1:{port}").geturl())
            with pytest.raises(redis.exceptions.NoPermissionError):
                node.execute_command(*command)
    users = [f"feed_ranking:{{user_id={9_900_000 + i}}}:user_realtime_features" for i in range(12)]  # every master
    ingest, serve = connect(on_cluster.as_component("ingest")), connect(on_cluster.as_component("serve"))
    try:
        for key in users:
            ingest.hset(key, "f", "1")
            assert serve.hget(key, "f") == b"1"
            with pytest.raises(redis.exceptions.NoPermissionError):
                serve.hset(key, "f", "2")
            with pytest.raises(redis.exceptions.NoPermissionError):
                ingest.hset(key.replace("user_realtime_features", "user_embedding"), "f", "1")
    finally:
        admin = connect(on_cluster)
        for key in users:
            admin.delete(key)


S3_REFUSED = {
    "ingest": [("put_object", "features/x/part.parquet"), ("get_object", "training/x"),
               ("delete_object", "archive/activity/x")],
    "pipeline": [("put_object", "events/dt=2026-01-01/x.parquet"), ("delete_object", "events/x")],
    "serve": [("put_object", "features/x"), ("delete_object", "features/x"), ("put_object", "events/x")],
    "reader": [("put_object", "models/x"), ("delete_object", "training/x")],
}


@pytest.mark.parametrize("component", list(S3_REFUSED))
def test_s3_refuses_prefixes_and_actions_outside_a_components_identity(settings, component):
    client = s3_client(settings.as_component(component))
    for action, key in S3_REFUSED[component]:
        kwargs = {"Body": b"x"} if action == "put_object" else {}
        with pytest.raises(ClientError) as caught:
            getattr(client, action)(Bucket=settings.s3.bucket, Key=key, **kwargs)
        assert caught.value.response["Error"]["Code"] == "AccessDenied", (action, key)
    with pytest.raises(ClientError):
        client.create_bucket(Bucket=f"{settings.s3.bucket}-other")
    with pytest.raises(ClientError):
        client.list_objects_v2(Bucket="feedstore-not-ours")


def test_s3_allows_each_component_its_own(settings):
    s3_client(settings.as_component("ingest")).put_object(Bucket=settings.s3.bucket, Key="events/t/x", Body=b"1")
    pipeline = s3_client(settings.as_component("pipeline"))
    pipeline.put_object(Bucket=settings.s3.bucket, Key="features/t/x", Body=b"2")
    assert pipeline.get_object(Bucket=settings.s3.bucket, Key="events/t/x")["Body"].read() == b"1"
    reader = s3_client(settings.as_component("reader"))
    assert reader.get_object(Bucket=settings.s3.bucket, Key="features/t/x")["Body"].read() == b"2"


def _https(url: str, context: ssl.SSLContext, method: str = "GET", body: bytes | None = None):
    """(status, body) of one request; an HTTPError is an answer too."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method), timeout=10,
                                    context=context) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


MASTER_ADMIN = [("GET", "/dir/assign"), ("GET", "/vol/grow?count=1"), ("GET", "/col/delete?collection=x"),
                ("GET", "/cluster/status"), ("GET", "/dir/status"), ("GET", "/vol/vacuum")]


def _contexts(tls_dir: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """TLS that trusts the stack's CA without a client certificate, and with the stack's."""
    anonymous = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    stack_client = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    stack_client.load_cert_chain(tls_dir / "weed.crt", tls_dir / "weed.key")
    return anonymous, stack_client


def _assert_plain_http_refused(url: str, method: str, data: bytes | None = None) -> None:
    """Go's TLS server answers a plain HTTP request with 400 "client sent an HTTP request to an
    HTTPS server", or closes the connection without an answer (a DELETE), or resets it while its
    answer is read (a request with a body the server did not read)."""
    try:
        status, body = _https(url, ssl.create_default_context(), method, data)
    except (http.client.RemoteDisconnected, ConnectionResetError):
        return
    assert status == 400 and b"HTTPS" in body, (method, url, status, body)


def _assert_refused_without_a_client_certificate(settings: Settings, tls_dir: Path) -> None:
    """Master, volume and filer HTTP and every gRPC port of the SeaweedFS at ``settings``: no answer
    without the stack's client certificate; with it the filer still wants a JWT (the issue's list,
    write and delete of the bucket without credentials)."""
    base = settings.stack.seaweedfs_port_base
    master, volume, filer = (f"127.0.0.1:{base + i}" for i in range(3))
    anonymous, stack_client = _contexts(tls_dir)
    for method, path in MASTER_ADMIN:
        _assert_plain_http_refused(f"http://{master}{path}", method)
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _https(f"https://{master}{path}", anonymous, method)  # TLS without a client certificate
    for port in (base + 10000, base + 10001, base + 10002):  # gRPC: master, volume, filer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                anonymous.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            with pytest.raises((ssl.SSLError, ConnectionError)):
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                assert tls.recv(1) == b"", port  # closed without a word
    bucket = settings.s3.bucket
    requests = [("GET", f"/buckets/{bucket}/", None), ("POST", f"/buckets/{bucket}/x.txt", b"data"),
                ("DELETE", f"/buckets/{bucket}/x.txt", None)]
    for method, path, data in requests:
        _assert_plain_http_refused(f"http://{filer}{path}", method, data)
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _https(f"https://{filer}{path}", anonymous, method, data)
        assert _https(f"https://{filer}{path}", stack_client, method, data)[0] in (401, 403), (method, path)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _https(f"https://{volume}/status", anonymous)
    with pytest.raises(ClientError):
        s3_client(settings).head_object(Bucket=bucket, Key="x.txt")  # nothing was written


def test_seaweedfs_ports_refuse_requests_without_credentials(stack):
    """On a SeaweedFS this stack starts, from nothing: the ports refuse; with the certificate the
    master answers, and volume writes and deletes still want a JWT; S3 goes on through each identity."""
    from devtools.stack.seaweedfs import SeaweedFSService
    from tests.conftest import private_stack

    with private_stack(stack) as private:
        weed = SeaweedFSService(private)
        weed.up()
        try:
            _assert_refused_without_a_client_certificate(private, weed.tls_dir)
            base = private.stack.seaweedfs_port_base
            master, volume = f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"
            _, stack_client = _contexts(weed.tls_dir)
            status, body = _https(f"https://{master}/dir/assign", stack_client)  # the certificate is the credential
            assert status == 200, body
            fid = __import__("json").loads(body)["fid"]
            for method, data in (("POST", b"data"), ("DELETE", None)):  # ... and volume writes want a JWT besides
                assert _https(f"https://{volume}/{fid}", stack_client, method, data)[0] == 401, method
            bucket = private.s3.bucket
            s3_client(private.as_component("ingest")).put_object(Bucket=bucket, Key="events/t/x", Body=b"1")
            s3_client(private.as_component("pipeline")).put_object(Bucket=bucket, Key="features/t/x", Body=b"2")
            for component in ("pipeline", "serve", "reader"):
                got = s3_client(private.as_component(component)).get_object(Bucket=bucket, Key="events/t/x")
                assert got["Body"].read() == b"1", component
            with pytest.raises(ClientError):
                s3_client(private.as_component("serve")).put_object(Bucket=bucket, Key="features/t/y", Body=b"3")
        finally:
            weed.stop()


def test_the_running_stacks_seaweedfs_refuses_requests_without_credentials(settings):
    """The shared stack every test runs on, as it is running (the Done-when: it holds on the local
    stack). A SeaweedFS started by a checkout before the certificates fails here: restart it with
    ``feedstore stack down && feedstore stack up``. S3 through each identity: the tests above."""
    from devtools.stack.seaweedfs import SeaweedFSService

    weed = SeaweedFSService(settings)
    weed._security_env()  # the stack's CA and certificate (derived from the settings' key, as the server's)
    _assert_refused_without_a_client_certificate(settings, weed.tls_dir)
    _, stack_client = _contexts(weed.tls_dir)
    status, body = _https(f"https://127.0.0.1:{settings.stack.seaweedfs_port_base}/cluster/status", stack_client)
    assert status == 200 and b"Leader" in body, body  # the certificate is the credential


def test_redis_default_user_is_off_on_a_server_the_stack_starts(stack):
    from devtools.stack.redis import RedisService
    from tests.conftest import private_stack

    with private_stack(stack) as private:
        server = RedisService(private)
        server.up()
        try:
            with pytest.raises(redis.exceptions.AuthenticationError):
                redis.Redis(port=private.redis.port).ping()
            assert redis.Redis.from_url(private.redis.url).ping()
            with pytest.raises(redis.exceptions.NoPermissionError):
                redis.Redis.from_url(private.as_component("serve").redis.url).set("feed_ranking:{user_id=1}:v", 1)
        finally:
            server.stop()


def test_components_are_seen_under_their_own_roles(settings, pg):
    """A running consumer and feature server, each in its own process, in pg_stat_activity."""
    import os

    feedstore = str(Path(sys.executable).parent / "feedstore")
    env = {**os.environ, **settings.feast_env()}
    consumer = subprocess.Popen([feedstore, "ingest", "--until-idle", "30"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        seen: dict[str, tuple] = {}
        while time.monotonic() < deadline and "feedstore-ingest" not in seen:
            rows = pg.execute("SELECT a.application_name, a.usename, r.rolsuper FROM pg_stat_activity a "
                              "JOIN pg_roles r ON r.rolname = a.usename WHERE a.datname = current_database()")
            seen.update({row[0]: row[1:] for row in rows})
            time.sleep(0.5)
        assert seen.get("feedstore-ingest") == ("feedstore_ingest_app", False), seen
    finally:
        consumer.terminate()
        consumer.wait(60)


def test_the_pipeline_connects_as_its_own_role(settings):
    """What every asset's Postgres, Redis and S3 handle is made from (orchestration.resources)."""
    from orchestration.resources import PostgresResource, RedisResource, S3Resource

    with PostgresResource().connect() as conn:
        assert conn.execute("SELECT current_user, current_setting('application_name'), rolsuper FROM pg_roles "
                            "WHERE rolname = current_user").fetchone() == ("feedstore_pipeline_app",
                                                                           "feedstore-pipeline", False)
    assert RedisResource().client().client_getname() == "feedstore-pipeline"
    assert S3Resource().settings().s3.access_key_id == "feedstore-pipeline-key"


def test_stack_env_exports_each_components_credentials(settings):
    out = subprocess.run([str(Path(sys.executable).parent / "feedstore"), "stack", "env"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    exported = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    for component in ("INGEST", "PIPELINE", "SERVE", "READER"):
        assert f"feedstore_{component.lower()}_app" in exported[f"FEED_POSTGRES_{component}_DSN"]
        assert f"feedstore-{component.lower()}" in exported[f"FEED_REDIS_{component}_URL"]
        assert exported[f"FEED_S3_{component}_ACCESS_KEY_ID"] == f"feedstore-{component.lower()}-key"


@pytest.mark.pure
def test_the_readme_grants_the_redis_users_the_stack_makes():
    """The README's ACL SETUSER lines for managed Redis are the local stack's rules, word for word."""
    from devtools.stack.redis import acl_rules
    from feedstore.settings import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    for component, rules in acl_rules(Settings.defaults()).items():
        assert f"ACL SETUSER feedstore-{component} on >… {rules}\n" in readme, component


def _connections_to(pid: int, server_port: int) -> set[int]:
    """Local ports of a process's TCP connections to ``server_port``."""
    import psutil

    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == server_port}


def _scraped(port: int, proc: subprocess.Popen, deadline: float) -> bytes:
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
                return answer.read()
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, "no /metrics"
            time.sleep(0.5)


def test_freshness_and_the_exporter_read_as_the_reader(settings, redis_client, tmp_path):
    """Both only read (the online store, Feast's registry, Dagster's instance), so they run as the
    reader: seen so by Redis and by Postgres while they serve their metrics."""
    import os

    from feedstore.feast.store import apply, close, store
    from tests.conftest import free_port

    opened = store(settings)
    apply(opened, settings)  # as the owner: the reader may not create the registry's project
    close(opened)
    admin = psycopg.connect(settings.postgres.dsn, user=settings.stack.postgres_admin_user,  # others' client_port
                            password=settings.stack.postgres_admin_password, autocommit=True)
    env = {**os.environ, **settings.feast_env(), "DAGSTER_HOME": str(tmp_path)}
    redis_port = redis_client.connection_pool.connection_kwargs["port"]
    seen: dict[str, tuple[set, set]] = {}
    try:
        for name, options in (("freshness", ["--metrics-port"]), ("exporter", ["--port"])):
            port = free_port()
            proc = subprocess.Popen([sys.executable, "-m", "feedstore.cli", name, *options, str(port)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                assert b"# TYPE" in _scraped(port, proc, time.monotonic() + 180)
                pg_ports = list(_connections_to(proc.pid, admin.info.port))
                users = {row[0] for row in admin.execute("SELECT usename FROM pg_stat_activity "
                                                         "WHERE client_port = ANY(%s)", (pg_ports,))}
                redis_ports = _connections_to(proc.pid, redis_port)
                clients = {c["user"] for c in redis_client.client_list()
                           if int(c["addr"].rsplit(":", 1)[1]) in redis_ports}
                seen[name] = (users, clients)
            finally:
                proc.terminate()
                proc.wait(60)
    finally:
        admin.close()
    assert seen["freshness"][1] == {"feedstore-reader"}, seen  # it reads the online store
    assert seen["exporter"][0] == {"feedstore_reader_app"}, seen  # it reads Feast's registry
    assert not {"feedstore_owner", "feedstore-admin"} & (seen["freshness"][0] | seen["exporter"][1]), seen


@pytest.mark.pure
def test_the_readme_grants_the_s3_prefixes_the_stack_grants():
    """The README's policy for managed S3 names each prefix the local identities may write."""
    import re

    from devtools.stack.seaweedfs import identity_actions
    from feedstore.settings import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text()
    policy = readme[readme.index("**S3**: one IAM user"):readme.index("**A SeaweedFS of your own**")]
    writes = {component: {a.removeprefix("Write:B/") for a in actions if a.startswith("Write:")}
              for component, actions in identity_actions(Settings.defaults(), "B").items()}
    pipeline = policy[policy.index("for the pipeline"):policy.index("for serve and the reader")]
    assert set(re.findall(r"`B/([a-z/]+/\*)`", pipeline)) == writes["pipeline"]
    ingest = policy[policy.index("for ingest"):policy.index("for the pipeline")] + policy[policy.index("Ingest also"):]
    assert set(re.findall(r"`(?:arn:aws:s3:::)?B/([a-z/]+/\*)`", ingest)) == writes["ingest"]
    assert writes["serve"] == writes["reader"] == set()
