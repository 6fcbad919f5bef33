"""The consumer as a user runs it (``feedstore ingest``, a subprocess, JSON log lines on stderr,
Prometheus metrics on a port), its stores behind fault proxies, and what each tier holds
afterwards: the pieces the fault and crash tests are made of."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.dataset as pads
import redis

from devtools.faults import FaultProxy
from feedstore.contract.lake import LANDED
from feedstore.settings import Settings
from ingestion.events import format_timestamp
from tests.conftest import free_port
from tests.ingestion.conftest import clear_counters, env_of, valid_lines  # noqa: F401 (re-exported)

STORES = ("postgres", "redis", "s3")


def _via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's on loopback (credentials kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{userinfo + '@' if userinfo else ''}127.0.0.1:{port}").geturl()


@contextmanager
def proxied_stores(s: Settings) -> Iterator[tuple[Settings, dict[str, FaultProxy]]]:
    """Settings whose Postgres, Redis and S3 endpoints are fault proxies in front of ``s``'s (Kafka
    stays direct), and the proxies by store name."""
    targets = {"postgres": s.postgres.dsn, "redis": s.redis.url, "s3": s.s3.endpoint}
    proxies = {name: FaultProxy((urlsplit(url).hostname, urlsplit(url).port), name=name).start()
               for name, url in targets.items()}
    try:
        yield s.replace(postgres={"dsn": _via(s.postgres.dsn, proxies["postgres"].port)},
                        redis={"url": _via(s.redis.url, proxies["redis"].port)},
                        s3={"endpoint": _via(s.s3.endpoint, proxies["s3"].port)}), proxies
    finally:
        for proxy in proxies.values():
            proxy.close()


_ZYGOTE = r"""
import json, os, select, sys, traceback
import feedstore.cli, ingestion.consumer  # the import cost, paid once for every consumer forked below

def reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        print(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}), flush=True)

while True:
    ready, _, _ = select.select([sys.stdin], [], [], 0.05)
    reap()
    if not ready:
        continue
    line = sys.stdin.readline()
    if not line:
        break
    log_path, args = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        code = 0
        try:
            feedstore.cli.app(args=args, prog_name="feedstore")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


class CliLauncher:
    """Forks ``feedstore`` CLI processes from one that has imported everything already: each child
    runs the CLI's own entry point (``feedstore.cli.app``, what the ``feedstore`` script runs) in a
    process of its own, without paying the interpreter's start-up and imports again, which on two
    loaded cores is most of a short-lived consumer's life. For tests that kill many of them."""

    def __init__(self, s: Settings, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _ZYGOTE], env={**env_of(s), **(env or {})},
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._spawned: list[int] = []
        self._exits: dict[int, int] = {}
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            message = json.loads(line)
            with self._changed:
                if "pid" in message:
                    self._spawned.append(message["pid"])
                else:
                    self._exits[message["exit"]] = message["code"]
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def spawn(self, args: list[str], log_path: str) -> int:
        with self._changed:
            known = len(self._spawned)
            self.proc.stdin.write(json.dumps([log_path, args]) + "\n")
            self.proc.stdin.flush()
            if not self._changed.wait_for(lambda: len(self._spawned) > known, 60):
                raise RuntimeError("the CLI launcher did not fork")
            return self._spawned[known]

    def returncode(self, pid: int, timeout: float = 0) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits, timeout)
            return self._exits.get(pid)

    def close(self) -> None:
        with self._changed:
            alive = [pid for pid in self._spawned if pid not in self._exits]
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.stdin.close()
        self.proc.wait(30)

    def __enter__(self) -> CliLauncher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class IngestProcess:
    """``feedstore ingest`` in a process of its own: a subprocess of the CLI, or forked by
    ``launcher``; every JSON line it logs is kept (``records``)."""

    def __init__(self, s: Settings, *args: str, env: dict[str, str] | None = None,
                 launcher: CliLauncher | None = None) -> None:
        self.metrics_port = free_port()
        cli_args = ["ingest", "--metrics-port", str(self.metrics_port), *args]
        self.records: list[dict] = []
        self.other: list[str] = []
        self._changed = threading.Condition()
        self._launcher = launcher
        if launcher is None:
            self._popen = subprocess.Popen([sys.executable, "-m", "feedstore.cli", *cli_args],
                                           env={**env_of(s), **(env or {})}, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE)
            self.pid = self._popen.pid
            source = self._popen.stderr
        else:
            log = tempfile.NamedTemporaryFile(prefix="ingest-", suffix=".log", delete=False)
            self._log_path = log.name
            self.pid = launcher.spawn(cli_args, log.name)
            source = _Tail(log, lambda: self.returncode is not None)
        self._reader = threading.Thread(target=self._drain, args=(source,), daemon=True)
        self._reader.start()

    @property
    def returncode(self) -> int | None:
        if self._launcher is None:
            return self._popen.poll()
        return self._launcher.returncode(self.pid)

    def alive(self) -> bool:
        return self.returncode is None

    def wait(self, timeout: float) -> int:
        """The exit code; raises TimeoutError if the process is still running after ``timeout``."""
        if self._launcher is None:
            try:
                code = self._popen.wait(timeout)
            except subprocess.TimeoutExpired as exc:
                raise TimeoutError(f"ingest still running after {timeout} s") from exc
        else:
            code = self._launcher.returncode(self.pid, timeout)
            if code is None:
                raise TimeoutError(f"ingest still running after {timeout} s")
        self._reader.join(10)
        return code

    def _drain(self, source) -> None:
        for raw in source:
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            with self._changed:
                if isinstance(record, dict):
                    self.records.append(record)
                else:
                    self.other.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def events(self, name: str) -> list[dict]:
        with self._changed:
            return [r for r in self.records if r.get("event") == name]

    def wait_for(self, name: str, timeout: float, where: Callable[[dict], bool] = lambda r: True,
                 after: int = 0) -> dict | None:
        """The first record ``name`` (from the ``after``-th record on) satisfying ``where``, waiting up to
        ``timeout`` seconds; None if none came or the process ended first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            seen = after
            while True:
                for record in self.records[seen:]:
                    if record.get("event") == name and where(record):
                        return record
                seen = len(self.records)
                left = deadline - time.monotonic()
                if left <= 0 or (not self.alive() and not self._reader.is_alive()):
                    return None
                self._changed.wait(min(left, 0.5))

    def assigned(self, timeout: float = 90) -> bool:
        return self.wait_for("partitions_assigned", timeout, lambda r: bool(r.get("partitions"))) is not None

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """A sample from the consumer's /metrics, as Prometheus would scrape it."""
        from prometheus_client.parser import text_string_to_metric_families

        from ingestion.metrics import PREFIX

        name = name if name.startswith(PREFIX) else PREFIX + name
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                    return sample.value
        return None

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait(30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as an operator stops it; SIGKILL if it does not stop within ``timeout``."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                return self.wait(timeout)
            except TimeoutError:
                self.kill()
        return self.wait(10)

    def tail(self, n: int = 30) -> str:
        with self._changed:
            return "\n".join([json.dumps(r) for r in self.records[-n:]] + self.other[-n:])


class _Tail:
    """The lines of a growing log file until its writer has ended."""

    def __init__(self, file, ended: Callable[[], bool]) -> None:
        self.file, self.ended = file, ended

    def __iter__(self):
        with open(self.file.name, "rb") as f:
            pending = b""
            while True:
                chunk = f.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith(b"\n"):
                        yield pending
                        pending = b""
                    continue
                if self.ended():
                    rest = f.read()
                    for line in (pending + rest).splitlines(keepends=True):
                        yield line
                    break
                time.sleep(0.05)
        os.unlink(self.file.name)


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# -- what each tier holds ----------------------------------------------------------------------------


def committed(s: Settings) -> int:
    """Messages the group has committed, summed over partitions (an offset fetch, no join)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": s.kafka.bootstrap, "group.id": s.kafka.consumer_group})
    try:
        offsets = c.committed([TopicPartition(s.kafka.topic_activity, p) for p in range(s.kafka.topic_partitions)],
                              timeout=10)
    finally:
        c.close()
    return sum(max(tp.offset, 0) for tp in offsets)


def distinct_events(lines: list[bytes]) -> pa.Table:
    """The events the lines stand for, each event id once with its first copy (the copy that wins):
    event_id, user_id, timestamp. Validation as the consumer's, with the catalog and clock lifted."""
    from ingestion.validation import Limits, Validator

    def anything(ids):
        return np.ones(len(ids), dtype=bool)

    valid = Validator(anything, anything, Limits(replay=True)).validate(lines).valid
    return valid.select(["event_id", "user_id", "timestamp"])


def stored_rows(s: Settings) -> list[tuple[str, int]]:
    """(event_id, timestamp in µs) of every Postgres row."""
    with psycopg.connect(s.postgres.dsn) as conn:
        return [(str(e), int(t)) for e, t in conn.execute(
            "SELECT event_id, (extract(epoch FROM \"timestamp\") * 1000000)::bigint FROM user_activity")]


def landed_rows(s: Settings) -> list[tuple[str, int]]:
    """(event_id, timestamp in µs) of every row of every landed Parquet object."""
    from feedstore.s3 import arrow_fs, bucket_path

    fs = arrow_fs(s)
    try:
        dataset = pads.dataset(bucket_path(f"{LANDED}/", s), filesystem=fs, format="parquet")
    except FileNotFoundError:
        return []
    table = dataset.to_table(columns=["event_id", "timestamp"])
    return list(zip(table.column("event_id").to_pylist(), table.column("timestamp").cast(pa.int64()).to_pylist()))


def counter_totals(s: Settings) -> Counter:
    """``total_events`` of every ``user:*`` hash, by user id."""
    r = redis.Redis.from_url(s.redis.url)
    out: Counter = Counter()
    for key in r.scan_iter("user:*", count=1000):
        if r.type(key) == b"hash" and (total := r.hget(key, "total_events")) is not None:
            out[int(key.split(b":")[1])] = int(total)
    return out


def assert_every_tier_exact(s: Settings, lines: list[bytes]) -> None:
    """Postgres rows = distinct = produced; landed Parquet rows = distinct = produced and the same
    copies as Postgres; Redis ``total_events`` per user = produced per user."""
    want = distinct_events(lines)
    want_ids = set(want.column("event_id").to_pylist())
    want_rows = set(zip(want.column("event_id").to_pylist(), want.column("timestamp").cast(pa.int64()).to_pylist()))
    stored = stored_rows(s)
    assert len(stored) == len({e for e, _ in stored}), f"Postgres holds {len(stored)} rows for " \
        f"{len({e for e, _ in stored})} event ids"
    assert {e for e, _ in stored} == want_ids, f"Postgres: {len(stored)} rows, {len(want_ids)} events produced"
    assert set(stored) == want_rows, "Postgres kept another copy than the first of some event"
    landed = landed_rows(s)
    assert len(landed) == len(want_ids), f"S3 landed {len(landed)} rows for {len(want_ids)} events " \
        f"({len({e for e, _ in landed})} distinct)"
    assert set(landed) == want_rows, "S3 holds other events (or other copies) than Postgres"
    counted = counter_totals(s)
    produced = Counter(want.column("user_id").to_pylist())
    assert counted == produced, (
        f"Redis counted {sum(counted.values())} events for {sum(produced.values())} produced; "
        f"{sum(1 for u in produced | counted if counted[u] != produced[u])} users off")


# -- load: distinct events and re-sends spread over partitions -------------------------------------


def resend_stream(seed: int, partitions: int, *, distinct: int, copies: int, retimed: int,
                  elsewhere: int) -> list[tuple[bytes, int]]:
    """(line, partition): ``distinct`` events, each in its user's partition, with re-sends mixed in
    behind their originals: ``copies`` exact copies (``elsewhere`` of them in another partition),
    and ``retimed`` copies of events carrying an event id with the timestamp moved by up to ten
    minutes."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    originals = valid_lines(distinct, now=now, seed=seed, spread_seconds=1500)
    home = [int(json.loads(line)["user_id"]) % partitions for line in originals]
    with_id = [k for k, line in enumerate(originals) if b'"event_id"' in line]
    resends: dict[int, list[tuple[bytes, int]]] = {}
    for n, k in enumerate(rng.sample(range(distinct), copies)):
        partition = (home[k] + 1 + rng.randrange(partitions - 1)) % partitions if n < elsewhere else home[k]
        resends.setdefault(rng.randrange(k, distinct), []).append((originals[k], partition))
    for k in rng.sample(with_id, retimed):
        event = json.loads(originals[k])
        ts = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        event["timestamp"] = format_timestamp(ts - timedelta(seconds=rng.randrange(1, 600)))
        resends.setdefault(rng.randrange(k, distinct), []).append((json.dumps(event).encode(), home[k]))
    out = []
    for k, line in enumerate(originals):
        out.append((line, home[k]))
        out += resends.get(k, [])
    return out


def produce_to_partitions(s: Settings, lines: list[tuple[bytes, int]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": s.kafka.bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for line, partition in lines:
        while True:
            try:
                producer.produce(s.kafka.topic_activity, value=line, partition=partition,
                                 key=str(json.loads(line)["user_id"]).encode())
                break
            except BufferError:
                producer.poll(0.2)
    assert producer.flush(60) == 0
