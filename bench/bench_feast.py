"""Feast benchmarks: ours beside stock Feast 0.67, same data, same run.

  .venv/bin/python bench/bench_feast.py                 # full sizes (1M items, 1M entity rows)
  .venv/bin/python bench/bench_feast.py --items 100000 --entity-rows 100000 --http-requests 2000
  .venv/bin/python bench/bench_feast.py --only reads   # 1 user × 500 items: ours beside the bare Redis read

Runs in its own namespace (Postgres database ``feedstore_bench``, bucket ``feedstore-bench``, its
own Redis on port 16390; ``--only reads`` uses ``feedstore_bench_reads``, ``feedstore-bench-reads``
and port 16391, so it can run beside a full run). Every measurement runs in a child
process so garbage-collector state and peak memory are per measurement. Prints a table and
writes bench/results/feast.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "feast.json"
BENCH_VIEW = "bench_item_vectors"


# ---- namespace -------------------------------------------------------------------------

def _namespace() -> tuple[str, str, int]:
    """Postgres database, bucket and Redis port of this run: ``BENCH_NAMESPACE=reads`` (what
    ``--only reads`` sets) takes its own, so a reads run never drops or flushes a full run's."""
    tag = os.environ.get("BENCH_NAMESPACE", "")
    if not tag:
        return "feedstore_bench", "feedstore-bench", 16390
    return f"feedstore_bench_{tag}", f"feedstore-bench-{tag}", 16391


BENCH_DB, BENCH_BUCKET, BENCH_REDIS_PORT = _namespace()


def start_redis() -> subprocess.Popen:
    """A Redis of the bench's own: test sessions flush the shared server's numbered databases."""
    import redis

    from devtools.stack.tools import require

    proc = subprocess.Popen([require("redis-server"), "--port", str(BENCH_REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if proc.poll() is not None:  # the port is taken: another run's Redis, never to be flushed
            raise RuntimeError(f"bench redis did not start: port {BENCH_REDIS_PORT} in use (another bench run?)")
        try:
            redis.Redis(port=BENCH_REDIS_PORT).ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("bench redis did not start")


def namespace_env() -> dict[str, str]:
    """The bench's own FEED_* values, derived from the running stack's."""
    from urllib.parse import urlsplit

    from feedstore.settings import get_settings

    base = get_settings()
    return {
        "FEED_POSTGRES_DSN": urlsplit(base.postgres.dsn)._replace(path=f"/{BENCH_DB}").geturl(),
        "FEED_REDIS_URL": f"redis://127.0.0.1:{BENCH_REDIS_PORT}/0",
        "BENCH_STOCK_REDIS_URL": f"redis://127.0.0.1:{BENCH_REDIS_PORT}/1",
        "FEED_S3_BUCKET": BENCH_BUCKET,
    }


def prepare_namespace(env: dict[str, str]) -> None:
    from urllib.parse import urlsplit

    import psycopg
    import redis
    from psycopg import sql

    from feedstore.s3 import s3_client
    from feedstore.settings import get_settings, reset_settings_cache

    os.environ.update(env)
    reset_settings_cache()
    s = get_settings()
    from devtools.stack.postgres import PostgresService

    with psycopg.connect(PostgresService(s).admin_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(BENCH_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(BENCH_DB), sql.Identifier(urlsplit(s.postgres.dsn).username)))
    client = s3_client(s)
    if s.s3.bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
        client.create_bucket(Bucket=s.s3.bucket)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=s.s3.bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=s.s3.bucket, Delete={"Objects": keys})
    for url in (s.redis.url, env["BENCH_STOCK_REDIS_URL"]):
        redis.Redis.from_url(url).flushdb()


# ---- stores ----------------------------------------------------------------------------

def stock_repo_dir() -> Path:
    """A feature_store.yaml for stock Feast: Redis store, duckdb offline store, local engine."""
    from urllib.parse import urlsplit

    from feedstore.settings import get_settings

    s = get_settings()
    url = urlsplit(os.environ["BENCH_STOCK_REDIS_URL"])
    path = Path(tempfile.gettempdir()) / "feedstore-bench-stock-repo"
    path.mkdir(exist_ok=True)
    (path / "feature_store.yaml").write_text(
        "project: feed_ranking\nprovider: local\n"
        f"registry:\n  registry_type: sql\n  path: {s.feast_registry_url}\n  cache_ttl_seconds: 60\n"
        "offline_store:\n  type: duckdb\n"
        f"online_store:\n  type: redis\n  connection_string: {url.hostname}:{url.port},db={url.path.lstrip('/')}\n"
        "materialization:\n  online_write_batch_size: 10000\n"
        "entity_key_serialization_version: 3\n")
    return path


def open_store(which: str):
    from feast import FeatureStore

    from feedstore.feast.offline.store import ensure_duckdb_s3
    from feedstore.feast.store import store

    if which == "ours":
        return store()
    ensure_duckdb_s3()  # stock duckdb cannot reach our S3 otherwise; setup only, same code path
    return FeatureStore(repo_path=str(stock_repo_dir()))


# ---- data ------------------------------------------------------------------------------

def bench_view():
    from datetime import timedelta

    from feast import FeatureView, Field, FileSource
    from feast.data_format import ParquetFormat
    from feast.types import Array, Float32, Float64, Int64, String

    from feedstore.feast.definitions import repository
    from feedstore.feast.sources import feature_glob
    from feedstore.settings import get_settings

    item = repository()["item"]
    return FeatureView(
        name=BENCH_VIEW, entities=[item], ttl=timedelta(days=7), online=True,
        source=FileSource(name=f"{BENCH_VIEW}_source", path=feature_glob(BENCH_VIEW), file_format=ParquetFormat(),
                          s3_endpoint_override=get_settings().s3.endpoint, timestamp_field="event_timestamp"),
        schema=[Field(name="vec", dtype=Array(Float32)), Field(name="a", dtype=Int64), Field(name="b", dtype=Int64),
                Field(name="c", dtype=Float64), Field(name="d", dtype=Float64), Field(name="e", dtype=String)],
    )


def setup_data(args, with_bench_view: bool = True) -> dict:
    import numpy as np

    from devtools.synthetic import features as synthetic
    from feedstore.settings import get_settings

    sys.path.insert(0, str(ROOT / "feature_repo"))
    env = {**os.environ, **get_settings().feast_env()}
    out = subprocess.run([str(Path(sys.executable).parent / "feast"), "-c", str(ROOT / "feature_repo"), "apply"],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    fs = open_store("ours")
    view = bench_view()
    fs.apply([view])
    now = time.time_ns() // 1000
    hour = 3_600_000_000
    step = 250_000
    for start in range(0, args.items if with_bench_view else 0, step):
        ids = np.arange(start, min(args.items, start + step)) + 1
        synthetic.write(BENCH_VIEW, synthetic.frame(view, ids, np.full(len(ids), now - hour), seed=start),
                        part=f"p{start}")
    users, items = np.arange(1, args.users + 1), np.arange(1, args.online_items + 1)
    day = 24 * hour
    for seed, v in enumerate(fs.list_feature_views()):
        if v.name == BENCH_VIEW:
            continue
        ids = users if v.entity_columns[0].name == "user_id" else items
        synthetic.write(v.name, synthetic.frame(v, ids, np.full(len(ids), now - 30 * 60_000_000), seed=seed), part="now")
        if v.name in ("user_activity_features", "item_engagement_features"):  # 30 days of daily rows
            hist_ids = ids[: args.hist_entities]
            for d in range(1, 31):
                synthetic.write(v.name, synthetic.frame(v, hist_ids, np.full(len(hist_ids), now - d * day), seed=d),
                                part="hist")
    return {"now_us": now}


# ---- children ---------------------------------------------------------------------------

def child_materialize(which: str, views: list[str]) -> dict:
    from datetime import datetime, timedelta, timezone

    import redis

    if views == [BENCH_VIEW]:  # own, emptied dbs: every repetition writes every row
        url = f"redis://127.0.0.1:{BENCH_REDIS_PORT}/{2 if which == 'ours' else 3}"
        os.environ["FEED_REDIS_URL" if which == "ours" else "BENCH_STOCK_REDIS_URL"] = url
        redis.Redis.from_url(url).flushdb()
    fs = open_store(which)
    end = datetime.now(timezone.utc)
    started = time.perf_counter()
    fs.materialize(start_date=end - timedelta(days=2), end_date=end, feature_views=views)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _percentiles(samples_ms: list[float], queued_ms: list[float] | None = None) -> dict:
    """Latency figures; with ``queued_ms`` (per sample, the run-queue wait of the processes on the
    request path) also the same figures without that wait: what the code costs given a CPU of its
    own, which on a shared two-core machine separates slow code from a busy machine."""
    import numpy as np

    a = np.asarray(samples_ms)
    out = {"n": len(a), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
           "max_ms": float(a.max()), "over_50ms": int((a > 50).sum())}
    if queued_ms is not None:
        q = np.asarray(queued_ms)
        unqueued = np.maximum(a - q, 0)
        out.update({"p50_unqueued_ms": float(np.percentile(unqueued, 50)),
                    "p99_unqueued_ms": float(np.percentile(unqueued, 99)), "max_unqueued_ms": float(unqueued.max()),
                    "queued_ms_mean": float(q.mean()), "queued_ms_p99": float(np.percentile(q, 99))})
    return out


class _RunQueue:
    """Run-queue wait (ns, ``/proc/<pid>/task/<tid>/schedstat`` field 2: runnable but not running)
    summed over the main threads of the given processes (this one, servers, the bench Redis)."""

    def __init__(self, pids: list[int]) -> None:
        self.paths = [f"/proc/{pid}/task/{pid}/schedstat" for pid in pids]

    def add(self, pid: int) -> None:
        path = f"/proc/{pid}/task/{pid}/schedstat"
        if path not in self.paths:
            self.paths.append(path)

    def wait_ms(self) -> float:
        total = 0
        for path in self.paths:
            try:
                with open(path) as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                pass  # process gone (a recycled worker) or no schedstat: counts nothing
        return total / 1e6


def _path_pids(server_pid: int | None = None) -> list[int]:
    pids = [os.getpid()]
    if os.environ.get("BENCH_REDIS_PID"):
        pids.append(int(os.environ["BENCH_REDIS_PID"]))
    if server_pid is not None:
        pids.extend(_process_tree(server_pid))
    return pids


def _process_tree(pid: int) -> list[int]:
    """The process and its descendants (stock ``feast serve`` answers from a gunicorn worker)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo.extend(int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split())
        except OSError:
            pass
    return out


def child_online(which: str, items_per_call: int, calls: int, users: int, online_items: int, gc_tuned: bool) -> dict:
    import numpy as np

    from feedstore.feast.serving import tune_gc, warm_up

    fs = open_store(which)
    svc = fs.get_feature_service("ranking")
    warm_up(fs)
    if gc_tuned:
        tune_gc()
    rng = np.random.default_rng(0)
    samples, queued = [], []
    run_queue = _RunQueue(_path_pids())
    for _ in range(calls):
        u = int(rng.integers(1, users + 1))
        rows = [{"user_id": u, "item_id": int(i)} for i in rng.integers(1, online_items + 1, items_per_call)]
        w0 = run_queue.wait_ms()
        t0 = time.perf_counter()
        result = fs.get_online_features(features=svc, entity_rows=rows).to_dict()
        samples.append((time.perf_counter() - t0) * 1000)
        queued.append(max(0.0, run_queue.wait_ms() - w0))
    nfeat = len(result) - 2
    assert result["item_embedding"][0] is not None and result["user_embedding"][0] is not None
    return {**_percentiles(samples, queued), "features": nfeat, "views": len(svc.feature_view_projections)}


def _bare_plan(fs, svc) -> list[tuple[str, str, list[bytes]]]:
    """Per view of the service, in the order our store sends them: (join key, view, fields)."""
    from feedstore.feast import private
    from feedstore.feast.online import layout

    ctx = private.request_context(fs.registry, fs.project, svc, False)
    return [(table.entity_columns[0].name, layout.view_name(table, fs.config),
             [n.encode() for n in requested] + [layout.TS_FIELD]) for table, requested in ctx.grouped_refs]


def _bare_payload(project: str, plan: list[tuple[str, str, list[bytes]]], ids: dict[str, list[int]]) -> tuple[bytes, int]:
    """HMGET key *fields for every distinct id of every view, packed as one RESP buffer (what
    any client must send: the keys follow ``layout``'s ``<project>:{<key>=<id>}:<view>``)."""
    parts: list[bytes] = []
    for join_key, view, fields in plan:
        head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
        tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)
        for i in dict.fromkeys(ids[join_key]):
            key = b"%s:{%s=%d}:%s" % (project.encode(), join_key.encode(), i, view.encode())
            parts.append(head + b"$%d\r\n%s\r\n" % (len(key), key) + tail)
    return b"".join(parts), len(parts)


class _BareRedis:
    """One socket and a hiredis reader: the round trip with nothing of ours around it; replies
    are parsed by hiredis into Python bytes and not decoded further."""

    def __init__(self, url: str) -> None:
        import socket
        from urllib.parse import urlsplit

        import hiredis

        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port or 6379))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()
        db = u.path.lstrip("/") or "0"
        self.call(b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%s\r\n" % (len(db), db.encode()), 1)

    def call(self, payload: bytes, count: int) -> list:
        self.sock.sendall(payload)
        replies, gets, recv, feed = [], self.reader.gets, self.sock.recv, self.reader.feed
        while len(replies) < count:
            reply = gets()
            if reply is False:
                feed(recv(1 << 20))
            else:
                replies.append(reply)
        return replies


def _captured_payload(fs, svc, rows: list[dict]) -> bytes:
    """The bytes our store sends to Redis for ``rows`` (to check the bare read sends the same)."""
    from redis.connection import AbstractConnection

    sent: list[bytes] = []
    original = AbstractConnection.send_packed_command

    def capture(self, command, check_health: bool = True) -> None:
        sent.extend([command] if isinstance(command, (bytes, str)) else command)
        return original(self, command, check_health)

    AbstractConnection.send_packed_command = capture
    try:
        fs.get_online_features(features=svc, entity_rows=rows).to_dict()
    finally:
        AbstractConnection.send_packed_command = original
    return b"".join(c for c in sent if b"\r\n$5\r\nHMGET\r\n" in c[:20])  # not a new connection's handshake


def child_reads(items_per_call: int, calls: int, users: int, online_items: int) -> dict:
    """One user × ``items_per_call`` items over ``ranking``, GC tuned: per call, in alternating
    order, our ``get_online_features(...).to_dict()``, the serve fast path's answer (the same
    read, then ``response_dict`` and msgspec's JSON, as ``feedstore serve`` answers, no HTTP),
    and the bare read of the same keys (packing the commands + one round trip). The bare
    buffer is checked byte for byte against the one our store sends."""
    import msgspec
    import numpy as np

    try:
        from feedstore.feast.online.response import response_dict
    except ImportError:  # measuring a checkout from before it: what the server answered with then
        from feast.feature_server_utils import convert_response_to_dict

        def response_dict(response) -> dict:
            return convert_response_to_dict(response.proto)

    from feedstore.feast.serving import tune_gc, warm_up
    from feedstore.settings import get_settings

    fs = open_store("ours")
    svc = fs.get_feature_service("ranking")
    warm_up(fs)
    plan = _bare_plan(fs, svc)
    bare = _BareRedis(get_settings().redis.url)
    tune_gc()
    rng = np.random.default_rng(0)
    requests = []
    for _ in range(calls):
        u = int(rng.integers(1, users + 1))
        items = [int(i) for i in rng.integers(1, online_items + 1, items_per_call)]
        requests.append((u, items))
    u, items = requests[0]
    rows = [{"user_id": u, "item_id": i} for i in items]
    payload, count = _bare_payload(fs.project, plan, {"user_id": [u] * len(items), "item_id": items})
    if _captured_payload(fs, svc, rows) != payload:
        raise AssertionError("the bare read does not send the bytes our store sends")

    def ours(u: int, items: list[int]) -> None:
        fs.get_online_features(features=svc, entity_rows=[{"user_id": u, "item_id": i} for i in items]).to_dict()

    encode = msgspec.json.Encoder().encode

    def serve(u: int, items: list[int]) -> None:  # OnlineFeaturesEndpoint's read and encoding
        encode(response_dict(fs.get_online_features(features=svc, entity_rows={"user_id": [u] * len(items),
                                                                         "item_id": items})))

    def bare_read(u: int, items: list[int]) -> None:
        bare.call(*_bare_payload(fs.project, plan, {"user_id": [u] * len(items), "item_id": items}))

    variants = {"ours": ours, "serve": serve, "bare": bare_read}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    queued: dict[str, list[float]] = {name: [] for name in variants}
    run_queue = _RunQueue(_path_pids())
    names = list(variants)
    for n, (u, items) in enumerate(requests):
        for name in names[n % 3:] + names[:n % 3]:  # rotate which goes first
            w0 = run_queue.wait_ms()
            t0 = time.perf_counter()
            variants[name](u, items)
            samples[name].append((time.perf_counter() - t0) * 1000)
            queued[name].append(max(0.0, run_queue.wait_ms() - w0))
    return {**{name: _percentiles(s, queued[name]) for name, s in samples.items()}, "commands": count}


def child_http(which: str, requests_n: int, users: int, online_items: int, port: int) -> dict:
    import numpy as np

    env = {**os.environ}
    if which == "ours":
        cmd = [str(Path(sys.executable).parent / "feedstore"), "serve", "--port", str(port)]
    else:
        cmd = [str(Path(sys.executable).parent / "feast"), "-c", str(stock_repo_dir()), "serve", "-p", str(port),
               "--no-access-log"]
    from feedstore.settings import get_settings

    env.update(get_settings().feast_env())
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = _KeepAliveClient(port)
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.request("GET", "/health")[0] == 200:
                    break
            except OSError:
                client.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{which} server did not start")
            time.sleep(0.5)
        rng = np.random.default_rng(1)
        bodies = [json.dumps({"feature_service": "ranking",
                              "entities": {"user_id": [int(rng.integers(1, users + 1))],
                                           "item_id": [int(rng.integers(1, online_items + 1))]}}).encode()
                  for _ in range(requests_n + 200)]
        for body in bodies[:200]:  # warm-up
            client.post_json("/get-online-features", body)
        samples, queued = [], []
        client.reconnects = 0
        run_queue = _RunQueue(_path_pids(proc.pid))
        for body in bodies[200:]:
            reconnects = client.reconnects
            w0 = run_queue.wait_ms()
            t0 = time.perf_counter()
            status, data = client.post_json("/get-online-features", body)
            samples.append((time.perf_counter() - t0) * 1000)  # a reconnect's time counts
            queued.append(max(0.0, run_queue.wait_ms() - w0))
            if client.reconnects != reconnects:  # a recycled worker: count its successor too
                for pid in _process_tree(proc.pid):
                    run_queue.add(pid)
            if status != 200:
                raise RuntimeError(data[:500])
        return {**_percentiles(samples, queued), "reconnects": client.reconnects}
    finally:
        proc.terminate()
        proc.wait(30)


class _KeepAliveClient:
    """One kept-alive HTTP/1.1 connection (stdlib ``http.client``): ``requests`` adds ~0.7 ms of
    client-side Python per request, more than a lean server's whole answer. Both servers are
    measured with it. A connection the server drops (stock recycles its worker) is reopened once
    and counted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = None
        self.reconnects = 0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        import http.client

        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.conn.request(method, path, body, headers or {})
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                self.close()
                if attempt:
                    raise
                self.reconnects += 1
        raise AssertionError("unreachable")

    def post_json(self, path: str, body: bytes):
        return self.request("POST", path, body, {"Content-Type": "application/json"})


def child_historical(which: str, entity_rows: int, hist_entities: int, now_us: int) -> dict:
    import duckdb
    import numpy as np
    import pandas as pd

    from feedstore.feast.offline.store import ensure_duckdb_s3
    from feedstore.feast.sources import feature_glob
    from feedstore.s3 import configure_duckdb

    rng = np.random.default_rng(2)
    day = 86_400_000_000
    entity = pd.DataFrame({
        "user_id": rng.integers(1, hist_entities + 1, entity_rows),
        "item_id": rng.integers(1, hist_entities + 1, entity_rows),
        "event_timestamp": pd.to_datetime(now_us - rng.integers(0, 30 * day, entity_rows), unit="us", utc=True),
    })
    entity["row_id"] = np.arange(entity_rows)
    features = ["user_activity_features:interactions_7d", "user_activity_features:like_rate_7d",
                "item_engagement_features:views_7d", "item_engagement_features:engagement_rate_7d"]
    if which == "bare":
        con = duckdb.connect()
        configure_duckdb(con)
        con.register("entity", entity)
        started = time.perf_counter()
        table = con.execute(
            "SELECT e.*, CASE WHEN a.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY THEN a.interactions_7d END"
            " AS interactions_7d, CASE WHEN a.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY THEN a.like_rate_7d"
            " END AS like_rate_7d, CASE WHEN i.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY THEN i.views_7d END"
            " AS views_7d, CASE WHEN i.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY THEN"
            " i.engagement_rate_7d END AS engagement_rate_7d FROM entity e"
            " ASOF LEFT JOIN read_parquet($a) a ON e.user_id = a.user_id AND e.event_timestamp >= a.event_timestamp"
            " ASOF LEFT JOIN read_parquet($i) i ON e.item_id = i.item_id AND e.event_timestamp >= i.event_timestamp",
            {"a": feature_glob("user_activity_features"), "i": feature_glob("item_engagement_features")},
        ).fetch_arrow_table()
    else:
        ensure_duckdb_s3()
        fs = open_store(which)
        started = time.perf_counter()
        table = fs.get_historical_features(entity_df=entity, features=features).to_arrow()
    seconds = time.perf_counter() - started
    table = table.sort_by("row_id")
    digest = {c: float(np.nansum(table[c].to_numpy(zero_copy_only=False).astype(float)))
              for c in ("interactions_7d", "like_rate_7d", "views_7d", "engagement_rate_7d")}
    return {"seconds": seconds, "rows": table.num_rows, "rows_per_s": entity_rows / seconds, "digest": digest,
            "nulls": int(table["interactions_7d"].null_count)}


def run_child(*args: str) -> dict:
    """Runs one measurement in a fresh process and keeps partial results on disk."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env=os.environ.copy(), check=False)
    if out.returncode:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(argv: list[str]) -> None:
    kind, *rest = argv
    sys.path.insert(0, str(ROOT / "feature_repo"))
    if kind == "materialize":
        result = child_materialize(rest[0], rest[1].split(","))
    elif kind == "online":
        result = child_online(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]), rest[5] == "1")
    elif kind == "reads":
        result = child_reads(int(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
    elif kind == "http":
        result = child_http(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]))
    else:
        result = child_historical(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
    print(json.dumps(result))


# ---- main -------------------------------------------------------------------------------

def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000, help="rows materialized (32-d vector + 5 scalars)")
    p.add_argument("--entity-rows", type=int, default=1_000_000, help="entity rows for get_historical_features")
    p.add_argument("--hist-entities", type=int, default=10_000, help="users and items with 30 days of rows")
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--online-items", type=int, default=20_000)
    p.add_argument("--online-calls", type=int, default=2_000, help="calls per online scenario")
    p.add_argument("--http-requests", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (online, historical)")
    p.add_argument("--materialize-reps", type=int, default=2)
    p.add_argument("--http-reps", type=int, default=2)
    p.add_argument("--only", choices=["reads"], help="reads: one user × 500 items, ours beside the bare Redis read")
    p.add_argument("--skip", default="", help="comma list of: materialize,online,http,historical")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    from rich.console import Console

    console = Console()
    if args.only == "reads" and "BENCH_NAMESPACE" not in os.environ:
        os.environ["BENCH_NAMESPACE"] = "reads"  # children read it at import
        global BENCH_DB, BENCH_BUCKET, BENCH_REDIS_PORT
        BENCH_DB, BENCH_BUCKET, BENCH_REDIS_PORT = _namespace()
    redis_proc = start_redis()
    os.environ["BENCH_REDIS_PID"] = str(redis_proc.pid)
    try:
        run_all(args, skip, console)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)


ONLINE_VIEWS = ["user_activity_features", "user_profile_features", "user_embedding", "user_candidates",
                "user_realtime_features", "item_catalog_features", "item_embedding", "item_engagement_features"]
"""The views the ``ranking`` feature service reads."""


def materialize_online(console) -> None:
    """The ranking service's views into both online stores (ours, stock), in child processes;
    ``bench_serve.py`` reuses it after :func:`setup_data`."""
    for which in ("ours", "stock"):
        with console.status(f"materializing online views ({which})…"):
            run_child("materialize", which, ",".join(ONLINE_VIEWS))


def _load() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__() if Path("/proc/loadavg").exists() else "?"


def _median_of(runs: list[dict]) -> dict:
    """Per-field median over repetitions (each repetition is a fresh child process)."""
    import numpy as np

    out = {"reps": len(runs)}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(np.median([r[key] for r in runs]))
        else:
            out[key] = value
    out["runs"] = runs
    return out


_RUN_FIELDS = {"args", "machine_cpus", "loadavg_start", "loadavg_end", "kept_from_previous_run", "previous_args"}


def _save(results: dict) -> None:
    """Writes this run's figures over the previous file's: measurements a ``--skip`` left out
    keep the previous run's figures, listed under ``kept_from_previous_run`` (with that run's args)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    kept = {k: v for k, v in previous.items() if k not in results and k not in _RUN_FIELDS}
    merged = {**results, **kept}
    if kept:
        merged["kept_from_previous_run"] = sorted(set(kept) | set(previous.get("kept_from_previous_run", [])) - set(results))
        merged["previous_args"] = previous.get("previous_args", previous.get("args")) \
            if previous.get("kept_from_previous_run") else previous.get("args")
    RESULTS.write_text(json.dumps(merged, indent=2))


def _interleaved(console, label: str, variants: dict[str, tuple], reps: int) -> dict[str, dict]:
    """Runs every variant ``reps`` times, alternating, and keeps per-field medians."""
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for rep in range(reps):
        for name, child_args in variants.items():
            with console.status(f"{label}: {name} ({rep + 1}/{reps})…"):
                runs[name].append(run_child(*child_args))
    return {name: _median_of(r) for name, r in runs.items()}


def run_reads(args, console) -> None:
    """``--only reads``: our 500-item read, the serve path's and the bare read, interleaved."""
    with console.status("preparing namespace and data…"):
        prepare_namespace(namespace_env())
        setup_data(args, with_bench_view=False)
    results: dict = {"args": vars(args), "machine_cpus": os.cpu_count(), "loadavg_start": _load()}
    with console.status("materializing online views (ours)…"):
        run_child("materialize", "ours", ",".join(ONLINE_VIEWS))
    calls = str(max(200, args.online_calls // 4))
    variants = {"reads_500": ("reads", "500", calls, str(args.users), str(args.online_items))}
    got = _interleaved(console, "reads 1 user × 500", variants, args.reps)["reads_500"]
    results["reads_500"] = {name: _median_of([r[name] for r in got["runs"]]) if isinstance(got["runs"][0][name], dict)
                            else got[name] for name in got["runs"][0]}
    results["loadavg_end"] = _load()
    _save(results)
    console.print(reads_table(results["reads_500"], args.reps))
    console.print(f"load average {results['loadavg_start']} → {results['loadavg_end']}; results: {RESULTS}")


def reads_table(r: dict, reps: int):
    """Ours and the serve path beside the bare read of the same keys (medians over ``reps``)."""
    from rich.table import Table

    bare = r["bare"]
    table = Table("1 user × 500 items", "p50 ms", "p99 ms", "p50 / bare", "p99 / bare", "run queue aside", "target",
                  caption=f"{r['commands']:.0f} HMGETs per call, gc tuned, medians of {reps} runs. ours: "
                          "get_online_features().to_dict(); serve: the same read, then the JSON feedstore serve "
                          "answers; bare: packing + one round trip, hiredis, replies not decoded")
    for name, label in (("ours", "ours"), ("serve", "serve"), ("bare", "bare")):
        x = r[name]
        table.add_row(label, f"{x['p50_ms']:.2f}", f"{x['p99_ms']:.2f}", f"{x['p50_ms'] / bare['p50_ms']:.2f}x",
                      f"{x['p99_ms'] / bare['p99_ms']:.2f}x",
                      f"p50 {x['p50_unqueued_ms']:.2f} / p99 {x['p99_unqueued_ms']:.2f}"
                      f" ({x['p50_unqueued_ms'] / bare['p50_unqueued_ms']:.2f}x / "
                      f"{x['p99_unqueued_ms'] / bare['p99_unqueued_ms']:.2f}x)",
                      "≤1.5x" if name == "ours" else "")
    return table


def run_all(args, skip, console) -> None:
    if args.only == "reads":
        return run_reads(args, console)

    env = namespace_env()
    with console.status("preparing namespace and data…"):
        prepare_namespace(env)
        meta = setup_data(args, with_bench_view="materialize" not in skip)
    results: dict = {"args": vars(args), "machine_cpus": os.cpu_count(), "loadavg_start": _load()}
    materialize_online(console)
    if "materialize" not in skip:
        # each repetition rewrites every row: the bench view is dropped from both Redis dbs first
        variants = {w: ("materialize", w, BENCH_VIEW) for w in ("ours", "stock")}
        got = _interleaved(console, f"materialize {args.items:,} rows", variants, args.materialize_reps)
        for which, r in got.items():
            r["rows_per_s"] = args.items / r["seconds"]
            results[f"materialize_{which}"] = r
            _save(results)
    if "online" not in skip:
        for n in (1, 500):
            calls = str(args.online_calls if n == 1 else max(200, args.online_calls // 4))
            variants = {f"online_{n}_{which}{'_gc' if tuned else ''}":
                        ("online", which, str(n), calls, str(args.users), str(args.online_items), "1" if tuned else "0")
                        for which in ("stock", "ours") for tuned in (False, True)}
            results.update(_interleaved(console, f"online 1 user × {n}", variants, args.reps))
            _save(results)
    if "http" not in skip:
        variants = {f"http_{which}": ("http", which, str(args.http_requests), str(args.users), str(args.online_items),
                                      str(port)) for which, port in (("stock", 16566), ("ours", 16567))}
        results.update(_interleaved(console, "http", variants, args.http_reps))
        _save(results)
    if "historical" not in skip:
        variants = {f"historical_{which}": ("historical", which, str(args.entity_rows), str(args.hist_entities),
                                            str(meta["now_us"])) for which in ("bare", "ours", "stock")}
        results.update(_interleaved(console, "historical", variants, args.reps))
    results["loadavg_end"] = _load()
    _save(results)
    console.print(summary_table(json.loads(RESULTS.read_text()), args))
    console.print(f"medians of {args.reps} interleaved runs (materialize {args.materialize_reps}, "
                  f"http {args.http_reps}); load average {results['loadavg_start']} → {results['loadavg_end']}")
    console.print(f"results: {RESULTS}")


def _unqueued(r: dict) -> str:
    if "p99_unqueued_ms" not in r:
        return ""
    return f"\n(run queue aside: p50 {r['p50_unqueued_ms']:.2f} / p99 {r['p99_unqueued_ms']:.2f} / max {r['max_unqueued_ms']:.0f})"


def summary_table(results: dict, args):
    from rich.table import Table

    table = Table("measurement", "ours", "stock Feast", "ours / stock", "target")
    if "materialize_ours" in results:
        o, s = results["materialize_ours"], results["materialize_stock"]
        table.add_row(f"materialize {args.items:,} rows", f"{o['rows_per_s']:,.0f} rows/s, {o['peak_rss_mb']:,.0f} MB",
                      f"{s['rows_per_s']:,.0f} rows/s, {s['peak_rss_mb']:,.0f} MB",
                      f"{o['rows_per_s'] / s['rows_per_s']:.1f}x faster", "≥5x, peak <1 GB")
    for n in (1, 500):
        if f"online_{n}_ours" in results:
            o, og = results[f"online_{n}_ours"], results[f"online_{n}_ours_gc"]
            s, sg = results[f"online_{n}_stock"], results[f"online_{n}_stock_gc"]
            for tag, a, b in (("", o, s), (", gc tuned", og, sg)):
                table.add_row(f"online 1 user × {n}, {o['features']} features / {o['views']} views{tag}",
                              f"p50 {a['p50_ms']:.2f} / p99 {a['p99_ms']:.2f} ms{_unqueued(a)}",
                              f"p50 {b['p50_ms']:.2f} / p99 {b['p99_ms']:.2f} ms{_unqueued(b)}",
                              f"p99 {a['p99_ms'] / b['p99_ms']:.2f}x",
                              "p99 ≤1.2x stock" if n == 1 else "p99 ≤20 ms")
    if "http_ours" in results:
        o, s = results["http_ours"], results["http_stock"]
        table.add_row(f"HTTP {args.http_requests:,} requests (keep-alive)",
                      f"p50 {o['p50_ms']:.2f} / p99 {o['p99_ms']:.2f} / max {o['max_ms']:.0f} ms, {o['over_50ms']:.0f} >50ms"
                      f"{_unqueued(o)}",
                      f"p50 {s['p50_ms']:.2f} / p99 {s['p99_ms']:.2f} / max {s['max_ms']:.0f} ms, {s['over_50ms']:.0f} >50ms"
                      f", {s.get('reconnects', 0):.0f} dropped connections{_unqueued(s)}",
                      f"p99 {o['p99_ms'] / s['p99_ms']:.2f}x", "p99 ≤3 ms, none >50 ms")
    if "historical_ours" in results:
        o, s, b = results["historical_ours"], results["historical_stock"], results["historical_bare"]
        same = o["digest"] == b["digest"] and o["nulls"] == b["nulls"] and o["rows"] == b["rows"]
        table.add_row(f"historical {args.entity_rows:,} entity rows", f"{o['rows_per_s']:,.0f} rows/s",
                      f"{s['rows_per_s']:,.0f} rows/s (bare ASOF {b['rows_per_s']:,.0f})",
                      f"{o['rows_per_s'] / s['rows_per_s']:.1f}x; bare/ours {b['rows_per_s'] / o['rows_per_s']:.2f}x",
                      f"bare/ours ≤1.5x, identical={same}")
    return table


if __name__ == "__main__":
    main()
