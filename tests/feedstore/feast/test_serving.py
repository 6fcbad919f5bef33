"""``feedstore serve``'s in-loop ``/get-online-features`` answers exactly as Feast's handler."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from devtools.synthetic import features as synthetic
from feedstore.feast.engine import materialize
from tests.conftest import free_port


def post(app, body: dict) -> tuple[int, dict]:
    """One POST straight through the ASGI interface (what uvicorn does for a request)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/get-online-features", "raw_path": b"/get-online-features", "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    incoming = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    try:
        asyncio.run(app(scope, receive, send))
    except Exception:  # noqa: BLE001 - Starlette re-raises after sending its 500, as under uvicorn
        pass
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body) if body.startswith((b"{", b"[")) else body


BODIES = [
    {"feature_service": "ranking", "entities": {"user_id": [301, 999], "item_id": [302, 303]}},
    {"features": ["user_embedding:user_embedding", "item_catalog_features:category"],
     "entities": {"user_id": [304], "item_id": [305]}, "full_feature_names": True},
    # pydantic coerces "true"; msgspec rejects it, so Feast's own route answers
    {"feature_service": "ranking", "entities": {"user_id": [301], "item_id": [302]}, "full_feature_names": "true"},
    # a string for an int key: Feast's read path (entity protos) inside our endpoint
    {"feature_service": "ranking", "entities": {"user_id": ["301"], "item_id": [302]}},
]
BAD = [
    {"features": ["no_such_view:x"], "entities": {"user_id": [1]}},        # Feast's error, raised in our endpoint
    {"feature_service": "no_such_service", "entities": {"user_id": [1]}},
    {"feature_service": "ranking"},                                        # no entities: FastAPI's 422
]


@pytest.fixture(scope="module")
def served_rows(fs, settings):
    from datetime import datetime, timedelta, timezone

    now = time.time_ns() // 1000
    for seed, name in enumerate(["user_embedding", "item_catalog_features"]):
        view = fs.get_feature_view(name)
        synthetic.write(name, synthetic.frame(view, np.arange(301, 306), np.full(5, now - 60_000_000), seed=seed),
                        settings, part="serve")
    end = datetime.now(timezone.utc)
    materialize(fs, ["user_embedding", "item_catalog_features"], end - timedelta(hours=1), end)


def test_inline_route_answers_like_feasts(fs, served_rows):
    from feast.feature_server import get_app

    from feedstore.feast.serving import harden, install_inline_online_route

    stock_app, ours_app = get_app(fs), get_app(fs)
    assert install_inline_online_route(ours_app, fs)
    assert ours_app.router.routes[0].path == "/get-online-features"
    answers = []
    for body in BODIES:
        (a_status, a), (b_status, b) = post(stock_app, body), post(ours_app, body)
        assert a_status == b_status == 200
        assert a == b
        answers.append(b)
    assert answers[1]["results"][-1]["statuses"] == ["PRESENT"]  # item 305's category
    hardened = harden(ours_app)
    for bad in BAD:  # Feast's 500s with internal text become the client's 4xx with a one-line error
        status, answer = post(hardened, bad)
        assert 400 <= status < 500, (bad, answer)
        assert isinstance(answer, dict) and answer.get("error") or answer.get("detail"), answer


def test_inline_route_keeps_feasts_request_metrics(fs, served_rows, monkeypatch):
    from feast import metrics as feast_metrics
    from feast.feature_server import get_app

    from feedstore.feast.serving import install_inline_online_route

    monkeypatch.setattr(feast_metrics, "_config", feast_metrics.build_metrics_flags())
    app = get_app(fs)
    assert install_inline_online_route(app, fs)

    def count(status: str) -> float:
        return feast_metrics.request_count.labels(endpoint="/get-online-features", status=status)._value.get()

    ok, failed = count("success"), count("error")
    assert post(app, BODIES[0])[0] == 200
    assert post(app, BAD[0])[0] != 200
    assert (count("success"), count("error")) == (ok + 1, failed + 1)


def test_feature_services_are_cached_until_the_registry_refreshes(fs):
    from feedstore.feast.serving import FeatureServices

    services = FeatureServices(fs)
    first = services.get("ranking")
    assert services.get("ranking") is first
    fs.refresh_registry()
    again = services.get("ranking")
    assert again is not first and again == first
    view = services.view("user_embedding")  # check_join_keys' lookups, likewise
    assert services.view("user_embedding") is view
    fs.refresh_registry()
    assert services.view("user_embedding") == view



@dataclass(frozen=True)
class Served:
    port: int
    log: Path


@pytest.fixture(scope="module")
def served(settings, served_rows, tmp_path_factory):
    """``feedstore serve`` as users run it: its own process, real uvicorn, the session's Redis."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "feedstore"), "serve", "--port", str(port),
                                 "--log-level", "info"],
                                env={**os.environ, **settings.feast_env()}, stdout=subprocess.DEVNULL, stderr=err)
    conn = None
    try:
        deadline = time.monotonic() + 120
        while conn is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                probe.request("GET", "/health")
                health = probe.getresponse()
                health.read()
                assert health.status == 200
                conn = probe
            except OSError:
                assert time.monotonic() < deadline, "feedstore serve did not start"
                time.sleep(0.5)
        conn.close()
        yield Served(port, log)
    finally:
        proc.terminate()
        proc.wait(30)


def _by_name(answer):
    """Feast groups a request's features in sets, so their order varies between processes."""
    if not isinstance(answer, dict) or "metadata" not in answer:
        return answer
    return {"results": dict(zip(answer["metadata"]["feature_names"], answer["results"], strict=True)),
            "metadata": {k: v for k, v in answer["metadata"].items() if k != "feature_names"},
            **{k: v for k, v in answer.items() if k not in ("results", "metadata")}}


def test_real_server_answers_like_feasts_app(fs, served):
    from feast.feature_server import get_app

    stock_app = get_app(fs)
    for body in BODIES:
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
        conn.request("POST", "/get-online-features", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        status, expected = post(stock_app, body)
        assert response.status == status, (body, raw[:300])
        expected = json.loads(expected) if isinstance(expected, bytes) else expected  # a JSON string
        assert _by_name(json.loads(raw)) == _by_name(expected)
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    conn.request("GET", "/health")
    assert conn.getresponse().status == 200  # Feast's other endpoints stay behind ours
    conn.close()


def test_audit_logging_leaves_the_request_to_feasts_route(fs, served_rows, monkeypatch):
    import feast.feature_server
    from feast import metrics as feast_metrics
    from feast.feature_server import get_app

    from feedstore.feast import serving

    monkeypatch.setattr(feast_metrics, "_config", feast_metrics._MetricsFlags(audit_logging=True))
    audited = []
    monkeypatch.setattr(feast.feature_server, "_emit_online_audit", lambda *args: audited.append(args[-2]))
    app = get_app(fs)
    assert serving.install_inline_online_route(app, fs)
    status, got = post(app, BODIES[0])
    assert status == 200 and got["metadata"]["feature_names"][:2] == ["user_id", "item_id"]
    assert audited == ["success"]  # Feast's handler answered and wrote its audit record


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response.status, raw


def _get(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, json.dumps(body) if body is not None else None, {"Content-Type": "application/json"})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response.status, raw


MALFORMED = [  # (body, status, words the error must hold)
    (b'{"features": ["no_such_view:x"], "entities": {"user_id": [1]}}', 404, "no_such_view"),
    (b'{"features": ["user_embedding:nope"], "entities": {"user_id": [1]}}', 404, "nope"),
    (b'{"feature_service": "no_such_service", "entities": {"user_id": [1]}}', 404, "no_such_service"),
    (b'{"feature_service": "ranking", "entities": {"user_id": [1, 2], "item_id": [1]}}', 400, "same length"),
    (b'{"feature_service": "ranking", "entities": {"user_id": [null], "item_id": [1]}}', 400, "not an id"),
    (b'{"feature_service": "ranking", "entities": {"user_id": [NaN], "item_id": [1]}}', 400, "not JSON"),
    (b'{"feature_service": "ranking", "entities": {"user_id": [1.5], "item_id": [1]}}', 400, "not an id"),
    (b'{"feature_service": "ranking", "entities": {"user_id": [1180591620717411303424], "item_id": [1]}}', 400,
     "64 bits"),
    (b'{"feature_service": "ranking", "entities": {"user_id": [true], "item_id": [1]}}', 400, "not an id"),
    # a string for an integer key: Feast converts decimal ones; the SDK's check refuses the rest
    (b'{"feature_service": "ranking", "entities": {"user_id": ["abc"], "item_id": [1]}}', 400,
     "entity_rows user_id (row 0): 'abc' is not an integer id"),
    (b'{"feature_service": "ranking", "entities": {}}', 400, "non-empty"),
    (b'{"feature_service": "ranking", "entities": {"user_id": []}}', 400, "non-empty"),
    (b'{"feature_service": "ranking", "entities": {"user_id": ["\xff\xfe"]}}', 400, "not JSON"),
    (b'{"features": ["user_embedding:user_embedding"], "entities": {"usr_id": [1]}}', 400, "unknown join key usr_id"),
    (b'{"features": ["user_embedding:user_embedding"], "entities": {"user_id": [1], "item_id": [2]}}', 400,
     "unknown join key item_id"),
    (b'{"feature_service": "ranking", "entities": {"user_id": [1]}}', 400, "missing join key item_id"),
]


def test_malformed_requests_get_a_4xx_with_one_line_and_no_traceback(served_guarded):
    port, log = served_guarded
    for body, status, words in MALFORMED:
        got, raw = request(port, "POST", "/get-online-features", body.replace(b"\\xff\\xfe", b"\xff\xfe"))
        answer = json.loads(raw)
        assert isinstance(answer, dict) and (got, words in answer["error"]) == (status, True), (body, got, raw)
        assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
    assert request(port, "GET", "/health")[0] == 200  # still up
    assert "Traceback" not in log.read_text()
    assert log.read_text().count("serve.client_error") >= len(MALFORMED)


def test_limits_on_body_size_and_entities(served_guarded):
    port, _ = served_guarded
    rows = {"user_id": list(range(1, 12)), "item_id": list(range(1, 12))}
    got, raw = request(port, "POST", "/get-online-features", json.dumps({"feature_service": "ranking", "entities": rows}).encode())
    assert got == 400 and "at most 10" in json.loads(raw)["error"]
    got, raw = request(port, "POST", "/get-online-features", b" " * 5000)
    assert got == 413 and "FEED_SERVE_MAX_BODY_BYTES" in json.loads(raw)["error"]
    ok = {"feature_service": "ranking", "entities": {"user_id": [301], "item_id": [302]}}
    assert request(port, "POST", "/get-online-features", json.dumps(ok).encode())[0] == 200


def test_write_and_admin_endpoints_need_the_token(served_guarded):
    port, _ = served_guarded
    push = json.dumps({"push_source_name": "user_realtime_push", "df": {"user_id": [1]}, "to": "online"}).encode()
    for path in ("/push", "/write-to-online-store", "/materialize", "/materialize-incremental"):
        got, raw = request(port, "POST", path, push)
        assert got == 401 and "Bearer" in json.loads(raw)["error"], (path, raw)
        got, raw = request(port, "POST", path, push, {"Authorization": "Bearer wrong"})
        assert got == 401, (path, raw)
    got, raw = request(port, "POST", "/materialize-incremental", json.dumps({"end_ts": "not a time"}).encode(),
                       {"Authorization": "Bearer s3cret"})
    assert got not in (401, 403), raw  # the token lets the request through to Feast


def test_write_endpoints_are_off_without_a_token(served):
    got, raw = request(served.port, "POST", "/push", b"{}")
    assert got == 403 and "FEED_SERVE_ADMIN_TOKEN" in json.loads(raw)["error"]


@pytest.fixture(scope="module")
def served_guarded(settings, served_rows, tmp_path_factory):
    """``feedstore serve`` with small limits and an admin token, its log kept."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, **settings.feast_env(), "FEED_SERVE_MAX_ENTITIES": "10", "FEED_SERVE_MAX_BODY_BYTES": "4096",
           "FEED_SERVE_ADMIN_TOKEN": "s3cret"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "feedstore"), "serve", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, "feedstore serve did not start"
                time.sleep(0.5)
        yield port, log
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_server_logs_in_as_serve_and_no_superuser(served, pg):
    request(served.port, "POST", "/get-online-features",
            json.dumps({"feature_service": "ranking", "entities": {"user_id": [301], "item_id": [302]}}).encode())
    rows = pg.execute("SELECT a.usename, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename "
                      "WHERE a.datname = current_database() AND a.application_name = 'feedstore-serve'").fetchall()
    assert rows and set(rows) == {("feedstore_serve_app", False)}


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, raw = _get(port, "GET", "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(raw.decode()) for s in family.samples}


def test_real_server_exports_request_metrics(served):
    """GET /metrics: requests by endpoint and status, the latency histogram, errors by class, each
    counted once per request (deltas: other tests share the server)."""
    endpoint = "/get-online-features"
    before = _scrape(served.port)
    assert before[("feedstore_serve_errors_total", (("class", "5xx"), ("endpoint", endpoint)))] >= 0
    for _ in range(3):
        assert _get(served.port, "POST", endpoint, BODIES[0])[0] == 200
    assert _get(served.port, "POST", endpoint, BAD[2])[0] == 422
    assert _get(served.port, "GET", "/no-such-path")[0] == 404
    after = _scrape(served.port)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)
    assert delta("feedstore_serve_requests_total", endpoint=endpoint, status="200") == 3
    assert delta("feedstore_serve_requests_total", endpoint=endpoint, status="422") == 1
    assert delta("feedstore_serve_requests_total", endpoint="other", status="404") == 1
    assert delta("feedstore_serve_errors_total", endpoint=endpoint, **{"class": "4xx"}) == 1
    assert delta("feedstore_serve_errors_total", endpoint=endpoint, **{"class": "5xx"}) == 0
    assert delta("feedstore_serve_request_seconds_count", endpoint=endpoint) == 4
    assert delta("feedstore_serve_request_seconds_bucket", endpoint=endpoint, le="+Inf") == 4


def test_real_server_logs_json_lines(served):
    """Off a terminal every line is a JSON object with a level, the server's own and uvicorn's."""
    lines = [line for line in served.log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any(r["event"] == "serve_started" for r in records)
    assert all(r["level"] in ("debug", "info", "warning", "error", "critical") for r in records)


# ---- feedstore serve --workers N ------------------------------------------------------------

def start_serve(settings, port: int, log: Path, *args: str) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen([str(Path(sys.executable).parent / "feedstore"), "serve", "--port", str(port), *args],
                                env={**os.environ, **settings.feast_env()}, stdout=out, stderr=subprocess.STDOUT)


def log_records(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a traceback's lines: the assertion that reads the log shows them
    return out


def wait_for_workers(proc: subprocess.Popen, port: int, log: Path, workers: int) -> list[int]:
    """Until every worker has logged ``serve_started`` (each binds its socket only once warmed
    up) and /health answers; returns the worker pids the parent logged."""
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        records = log_records(log)
        if sum(r.get("event") == "serve_started" for r in records) == workers:
            try:
                if request(port, "GET", "/health")[0] == 200:
                    return next(r["pids"] for r in records if r.get("event") == "serve.workers_started")
            except OSError:
                pass
        assert time.monotonic() < deadline, "feedstore serve --workers did not start:\n" + log.read_text()[-3000:]
        time.sleep(0.5)


@dataclass(frozen=True)
class ServedWorkers:
    port: int
    log: Path
    pids: list[int]


@pytest.fixture(scope="module")
def served_workers(settings, served_rows, tmp_path_factory):
    """``feedstore serve --workers 2``: two worker processes on one port."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve-workers.log"
    proc = start_serve(settings, port, log, "--workers", "2", "--log-level", "info")
    try:
        yield ServedWorkers(port, log, wait_for_workers(proc, port, log, 2))
    finally:
        proc.terminate()
        proc.wait(30)


class KeepAlive:
    """One kept-alive connection; every answer with the pid of the worker that gave it."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, body: dict) -> tuple[int, bytes, int]:
        self.conn.request("POST", "/get-online-features", json.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        return response.status, response.read(), int(response.getheader("x-feedstore-worker"))

    def get(self, path: str) -> tuple[int, bytes, int]:
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        return response.status, response.read(), int(response.getheader("x-feedstore-worker"))


def connections_to_every_worker(port: int, workers: int, at_least: int = 8) -> list[KeepAlive]:
    """Kept-alive connections until every worker has one: SO_REUSEPORT hashes each connection
    to a worker, so a few could all land on one (64 connections all on one of two: 2^-63)."""
    conns: list[KeepAlive] = []
    seen: set[int] = set()
    while len(conns) < at_least or (len(seen) < workers and len(conns) < 64):
        conns.append(KeepAlive(port))
        seen.add(conns[-1].get("/health")[2])
    return conns


def _online_total(port: int) -> float:
    samples = _scrape(port)
    return samples.get(("feedstore_serve_requests_total", (("endpoint", "/get-online-features"), ("status", "200"))), 0)


def test_workers_answer_like_one_worker_and_metrics_sum_over_them(served, served_workers):
    bodies = [{"feature_service": "ranking", "entities": {"user_id": [u, u], "item_id": [i, 305]}}
              for u in (301, 302, 303) for i in (302, 304)] + BODIES[:2]
    expected = {}
    for n, body in enumerate(bodies):  # the single-worker server's answers
        status, raw = _get(served.port, "POST", "/get-online-features", body)
        assert status == 200, raw[:300]
        expected[n] = _by_name(json.loads(raw))
    conns = connections_to_every_worker(served_workers.port, 2)
    before = _online_total(served_workers.port)
    answered_by: dict[int, int] = {}
    sent = 0
    for round_ in range(10):
        for c, conn in enumerate(conns):
            n = (round_ + c) % len(bodies)
            status, raw, pid = conn.post(bodies[n])
            sent += 1
            assert status == 200, raw[:300]
            assert _by_name(json.loads(raw)) == expected[n]
            answered_by[pid] = answered_by.get(pid, 0) + 1
    assert set(answered_by) == set(served_workers.pids), answered_by  # both workers answered, nobody else
    totals = {}
    for conn in conns:  # /metrics on every worker: the same sum over both
        status, raw, pid = conn.get("/metrics")
        assert status == 200
        from prometheus_client.parser import text_string_to_metric_families

        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(raw.decode()) for s in f.samples}
        totals[pid] = samples[("feedstore_serve_requests_total",
                               (("endpoint", "/get-online-features"), ("status", "200")))]
    assert set(totals) == set(served_workers.pids)
    assert set(totals.values()) == {before + sent}, (before, sent, totals)
    assert "Traceback" not in served_workers.log.read_text()


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigterm_stops_every_worker_and_exits_0(settings, served_rows, tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    proc = start_serve(settings, port, log, "--workers", "2")
    try:
        pids = wait_for_workers(proc, port, log, 2)
        conns = connections_to_every_worker(port, 2)  # open keep-alive connections do not hold it up
        assert conns[0].post(BODIES[0])[0] == 200
        started = next(r for r in log_records(log) if r.get("event") == "serve.workers_started")
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [pid for pid in pids if _alive(pid)]
    assert not Path(started["metrics_dir"]).exists()
    assert "Traceback" not in log.read_text()


def test_a_dead_worker_is_logged_and_the_server_exits_1(settings, served_rows, tmp_path):
    """A worker that dies is not replaced: the parent logs it, stops the others and exits 1,
    for the process manager (systemd, Kubernetes) to restart the whole server."""
    import signal

    port, log = free_port(), tmp_path / "serve.log"
    proc = start_serve(settings, port, log, "--workers", "2")
    try:
        pids = wait_for_workers(proc, port, log, 2)
        os.kill(pids[0], signal.SIGKILL)
        assert proc.wait(60) == 1, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    died = [r for r in log_records(log) if r.get("event") == "serve.worker_died"]
    assert [(r["pid"], r["returncode"]) for r in died] == [(pids[0], -signal.SIGKILL)]
    assert not _alive(pids[1])

