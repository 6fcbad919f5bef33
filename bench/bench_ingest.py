"""Ingestion throughput: the validator against a naive per-event baseline; ``feedstore ingest``
end to end into every tier (DLQ, Postgres, S3 Parquet, Redis) beside the bare batched path on the
same events (COPY into a staging table + ``INSERT … ON CONFLICT DO NOTHING RETURNING`` + one Redis
pipeline; no Kafka, no S3, no validation), with the consumer's time per stage; and the storage lag
(Kafka record timestamp to committed after every tier) at 5,000 events/s offered. Medians over
repeats, all on the running stack.

    .venv/bin/python bench/bench_ingest.py [--events 200000] [--repeats 3] [--batch-sizes 5000,20000]

Runs in namespaces of its own (database, bucket, topics, Redis db) and removes them afterwards.
Prints tables and writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.synthetic.defects import inject_defects  # noqa: E402
from feedstore.contract import rules  # noqa: E402
from ingestion.catalog import IdIndex  # noqa: E402
from ingestion.events import derive_event_id  # noqa: E402
from ingestion.validation import Validator  # noqa: E402
from tests.ingestion.conftest import ITEM_IDS, USER_IDS, valid_lines  # noqa: E402


def naive_validate(payloads: list[bytes], users: set[int], items: set[int], now: datetime) -> list[str | None]:
    """The seed's way: json.loads and dict checks per event, uuid5 per event, a set per batch."""
    out: list[str | None] = []
    seen: set = set()
    for raw in payloads:
        if len(raw) > rules.MAX_MESSAGE_BYTES:
            out.append("too_large")
            continue
        try:
            e = json.loads(raw)
        except ValueError:
            out.append("bad_json")
            continue
        if not isinstance(e, dict) or any(e.get(f) is None for f in rules.REQUIRED_EVENT_FIELDS):
            out.append("bad_shape")
            continue
        try:
            uid, iid = int(e["user_id"]), int(e["item_id"])
            ts = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
            if ts.tzinfo is None:
                raise ValueError("naive timestamp")
        except (TypeError, ValueError, AttributeError):
            out.append("bad_value")
            continue
        ctx = e.get("context") or {}
        dwell = e.get("dwell_time_ms")
        if (not isinstance(ctx, dict) or e["event_type"] not in rules.EVENT_TYPES
                or (dwell is not None and (not isinstance(dwell, int) or not 0 <= dwell <= rules.MAX_DWELL_MS))):
            out.append("bad_value")
            continue
        age = (now - ts).total_seconds()
        if age > rules.MAX_EVENT_AGE_SECONDS or age < -rules.MAX_FUTURE_SKEW_SECONDS:
            out.append("clock")
            continue
        if uid not in users or iid not in items:
            out.append("unknown")
            continue
        eid = e.get("event_id") or str(derive_event_id(uid, iid, e["event_type"], ts, ctx.get("session_id")))
        if eid in seen:
            out.append("duplicate")
            continue
        seen.add(eid)
        out.append(None)
    return out


def bench_validator(n: int, repeats: int) -> dict:
    now = datetime.now(timezone.utc)
    lines, _ = inject_defects(valid_lines(n, now=now, seed=3), copies=5, duplicates=200, now=now,
                              unknown_user_id=999_999, unknown_item_id=999_999)
    lines = [x for x in lines if len(x) < 1_000_000]  # the 10 MB lines would dominate both sides
    validator = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains)
    users, items = set(USER_IDS.tolist()), set(ITEM_IDS.tolist())
    ours, naive = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        result = validator.validate(lines, now=now)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        base = naive_validate(lines, users, items, now)
        naive.append(time.perf_counter() - t)
    med_ours, med_naive = statistics.median(ours), statistics.median(naive)
    return {"events": len(lines), "repeats": repeats,
            "validator_median_s": med_ours, "naive_median_s": med_naive,
            "validator_events_per_s": len(lines) / med_ours, "naive_events_per_s": len(lines) / med_naive,
            "speedup": med_naive / med_ours, "valid_ours": result.valid.num_rows,
            "valid_naive": sum(r is None for r in base)}


# -- the consumer beside the bare batched path, on the same events -----------------------------------

_BARE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS bare_staging (
    event_id TEXT, user_id BIGINT, item_id BIGINT, event_type TEXT, ts_us BIGINT,
    dwell_time_ms INTEGER, device TEXT, platform TEXT, session_id TEXT
) ON COMMIT DELETE ROWS
"""
_BARE_COPY = ("COPY bare_staging (event_id, user_id, item_id, event_type, ts_us, dwell_time_ms, device, platform, "
              "session_id) FROM STDIN (FORMAT BINARY)")
_BARE_TYPES = ["text", "int8", "int8", "text", "int8", "int4", "text", "text", "text"]
_BARE_INSERT = """
WITH new_ids AS (
    INSERT INTO activity_event_ids (event_id, "timestamp")
    SELECT event_id::uuid, 'epoch'::timestamptz + ts_us * interval '1 microsecond' FROM bare_staging
    ON CONFLICT DO NOTHING
    RETURNING event_id
)
INSERT INTO user_activity (event_id, user_id, item_id, event_type, "timestamp", context, dwell_time_ms)
SELECT s.event_id::uuid, user_id, item_id, event_type, 'epoch'::timestamptz + ts_us * interval '1 microsecond',
       NULLIF(jsonb_strip_nulls(jsonb_build_object('device', device, 'platform', platform,
                                                   'session_id', session_id)), '{}'::jsonb),
       dwell_time_ms
FROM bare_staging s JOIN new_ids n ON n.event_id = s.event_id::uuid
RETURNING user_id
"""


def _fresh(s, tag: str):
    """Empty activity tables, counters and landing prefix, and topics and a group of their own."""
    import psycopg
    import redis

    from devtools.stack.kafka import KafkaService
    from tests.ingestion.conftest import clear_landing

    run = s.replace(kafka={"topic_activity": f"{s.kafka.topic_activity}-{tag}", "topic_dlq": f"{s.kafka.topic_dlq}-{tag}",
                           "consumer_group": f"{s.kafka.consumer_group}-{tag}"})
    KafkaService(run).provision()
    with psycopg.connect(run.postgres.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE user_activity, activity_event_ids")
    redis.Redis.from_url(run.redis.url).flushdb()
    clear_landing(run)
    return run


def bare_path(s, table, batch_size: int) -> float:
    """Seconds to store ``table`` batch by batch the plain way: COPY into a staging table, one
    ``INSERT … ON CONFLICT DO NOTHING RETURNING``, one Redis pipeline of the new events' counts."""
    from collections import Counter

    import psycopg
    import pyarrow as pa
    import redis

    from ingestion.sinks.redis import user_key

    r = redis.Redis.from_url(s.redis.url)
    with psycopg.connect(s.postgres.dsn, autocommit=True) as conn:
        conn.execute(_BARE_STAGING)
        days = {d for d in (table.column("timestamp").cast(pa.int64()).to_numpy() // 86_400_000_000).tolist()}
        for d in days:
            conn.execute("SELECT ensure_activity_partitions(date '1970-01-01' + %s::int, date '1970-01-01' + %s::int)", (d, d))
        started = time.perf_counter()
        for offset in range(0, table.num_rows, batch_size):
            batch = table.slice(offset, batch_size)
            cols = [batch.column(n).to_pylist() for n in ("event_id", "user_id", "item_id", "event_type")]
            ts = batch.column("timestamp").cast(pa.int64()).to_pylist()
            ctx = [batch.column(n).to_pylist() for n in ("dwell_time_ms", "device", "platform", "session_id")]
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(_BARE_COPY) as copy:
                    copy.set_types(_BARE_TYPES)
                    for row in zip(*cols, ts, *ctx):
                        copy.write_row(row)
                users = Counter(u for (u,) in cur.execute(_BARE_INSERT).fetchall())
            pipe = r.pipeline(transaction=False)
            for user, n in users.items():
                pipe.hincrby(user_key(user), "total_events", n)
                pipe.expire(user_key(user), rules.HOT_COUNTER_TTL_SECONDS)
            pipe.execute()
        return time.perf_counter() - started


def consumer_run(s, lines: list[bytes]) -> dict:
    """``feedstore ingest --until-idle`` over the produced lines: its own figures and stage times."""
    from tests.ingestion.conftest import produce
    from tests.ingestion.harness import IngestProcess

    produce(s, lines)
    proc = IngestProcess(s, "--until-idle", "3")
    code = proc.wait(900)
    assert code == 0, proc.tail()
    stats = proc.events("ingest_stopped")[-1]
    stages: dict[str, float] = {}
    for record in proc.events("batch_committed"):
        for stage, seconds in record["stage_seconds"].items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    return {"messages": stats["messages"], "stored": stats["stored"], "batches": stats["batches"],
            "seconds": stats["busy_seconds"], "events_per_s": stats["messages"] / stats["busy_seconds"],
            "stage_seconds": stages}


def bench_consumer_vs_bare(n: int, batch_size: int, repeats: int) -> dict:
    """The consumer end to end into every tier beside the bare batched path, same events, same run."""
    import psycopg

    from devtools.sandbox import sandbox
    from ingestion.validation import Limits
    from tests.ingestion.conftest import seed_catalog

    with sandbox("bench") as namespace:
        base = namespace.replace(ingest={"batch_size": batch_size})
        seed_catalog(base.postgres.dsn)
        now = datetime.now(timezone.utc)
        lines = valid_lines(n, now=now, seed=4, spread_seconds=600)
        validator = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True))
        table = validator.validate(lines).valid  # the bare path's input: parsed, not validated on its clock
        consumer, bare = [], []
        for k in range(repeats):
            run = _fresh(base, f"c{k}")
            consumer.append(consumer_run(run, lines))
            run = _fresh(base, f"b{k}")
            bare.append(bare_path(run, table, batch_size))
            with psycopg.connect(run.postgres.dsn) as conn:
                stored = conn.execute("SELECT count(*) FROM user_activity").fetchone()[0]
            assert stored == table.num_rows == consumer[-1]["stored"], (stored, table.num_rows, consumer[-1])
    c_s = statistics.median(r["seconds"] for r in consumer)
    b_s = statistics.median(bare)
    stages = {stage: statistics.median(r["stage_seconds"].get(stage, 0.0) for r in consumer)
              for stage in consumer[0]["stage_seconds"]}
    return {"events": len(lines), "batch_size": batch_size, "repeats": repeats, "seconds": c_s,
            "events_per_s": len(lines) / c_s, "bare_seconds": b_s, "bare_events_per_s": table.num_rows / b_s,
            "ratio": (len(lines) / c_s) / (table.num_rows / b_s), "stage_seconds": stages,
            "consumer_runs": consumer, "bare_runs_s": bare}


# -- storage lag at an offered rate ---------------------------------------------------------------------


def _paced(s, lines: list[bytes], rate: float) -> list[tuple[int, int, int]]:
    """Produces ``lines`` at ``rate`` per second; (partition, offset, broker append time in µs) of each."""
    from confluent_kafka import Producer

    delivered: list[tuple[int, int, int]] = []

    def on_delivery(err, msg) -> None:
        if err is None:
            delivered.append((msg.partition(), msg.offset(), msg.timestamp()[1] * 1000))

    producer = Producer({"bootstrap.servers": s.kafka.bootstrap, "linger.ms": 5})
    started = time.monotonic()
    step = 0.01
    per_step = max(1, int(rate * step))
    for k in range(0, len(lines), per_step):
        for line in lines[k:k + per_step]:
            producer.produce(s.kafka.topic_activity, value=line, key=str(json.loads(line)["user_id"]).encode(),
                             on_delivery=on_delivery)
        producer.poll(0)
        ahead = started + (k + per_step) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    assert producer.flush(60) == 0
    return delivered


def _iso_us(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1_000_000)


def bench_lag(rate: float, seconds: float, batch_size: int, repeats: int) -> dict:
    """Storage lag at ``rate`` events/s offered: from each record's Kafka timestamp (log append time)
    to the consumer's log line after the commit of its batch, which follows the writes to every tier."""
    import numpy as np

    from devtools.sandbox import sandbox
    from tests.ingestion.conftest import seed_catalog
    from tests.ingestion.harness import IngestProcess

    p50, p99, runs = [], [], []
    with sandbox("bench") as namespace:
        base = namespace.replace(ingest={"batch_size": batch_size})
        seed_catalog(base.postgres.dsn)
        for k in range(repeats):
            run = _fresh(base, f"lag{k}")
            lines = valid_lines(int(rate * seconds), seed=40 + k, spread_seconds=60)
            proc = IngestProcess(run)
            try:
                assert proc.assigned(), proc.tail()
                delivered = _paced(run, lines, rate)
                need = len(delivered)
                deadline = time.monotonic() + 120
                while sum(r["messages"] for r in proc.events("batch_committed")) < need:
                    assert time.monotonic() < deadline and proc.alive(), proc.tail()
                    time.sleep(0.2)
            finally:
                proc.stop()
            commits: dict[int, list[tuple[int, int, int]]] = {}
            for record in proc.events("batch_committed"):
                at = _iso_us(record["timestamp"])
                for p, (first, last) in record["partitions"].items():
                    commits.setdefault(int(p), []).append((first, last, at))
            lags = []
            for p, offset, appended in delivered:
                at = next(t for first, last, t in commits[p] if first <= offset <= last)
                lags.append((at - appended) / 1_000_000)
            lags = np.array(lags)
            p50.append(float(np.percentile(lags, 50)))
            p99.append(float(np.percentile(lags, 99)))
            runs.append({"events": need, "p50_s": p50[-1], "p99_s": p99[-1], "max_s": float(lags.max()),
                         "batches": len(proc.events("batch_committed"))})
    return {"offered_events_per_s": rate, "seconds": seconds, "batch_size": batch_size, "repeats": repeats,
            "p50_s": statistics.median(p50), "p99_s": statistics.median(p99), "runs": runs}


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--validator-events", type=int, default=50_000)
    parser.add_argument("--batch-sizes", default="5000")
    parser.add_argument("--lag-rate", type=float, default=5_000)
    parser.add_argument("--lag-seconds", type=float, default=15)
    args = parser.parse_args()
    console = Console()
    with console.status("validator vs naive baseline…"):
        validator = bench_validator(args.validator_events, args.repeats)
    runs = []
    for size in [int(x) for x in args.batch_sizes.split(",")]:
        with console.status(f"consumer and bare path, {args.events} events, batch {size}…"):
            runs.append(bench_consumer_vs_bare(args.events, size, args.repeats))
    with console.status(f"storage lag at {args.lag_rate:,.0f} events/s…"):
        lag = bench_lag(args.lag_rate, args.lag_seconds, int(args.batch_sizes.split(",")[0]), args.repeats)

    table = Table("measure", "events", "median s", "events/s", "ratio")
    table.add_row("validator (msgspec + numpy)", str(validator["events"]), f"{validator['validator_median_s']:.3f}",
                  f"{validator['validator_events_per_s']:,.0f}", f"{validator['speedup']:.1f}x")
    table.add_row("naive per-event baseline", str(validator["events"]), f"{validator['naive_median_s']:.3f}",
                  f"{validator['naive_events_per_s']:,.0f}", "1.0x")
    for run in runs:
        table.add_row(f"consumer end to end, batch {run['batch_size']}", str(run["events"]), f"{run['seconds']:.2f}",
                      f"{run['events_per_s']:,.0f}", f"{run['ratio']:.2f}x")
        table.add_row(f"bare batched path, batch {run['batch_size']}", str(run["events"]),
                      f"{run['bare_seconds']:.2f}", f"{run['bare_events_per_s']:,.0f}", "1.0x")
    console.print(table)
    stages = Table("consumer stage (batch " + str(runs[0]["batch_size"]) + ")", "seconds", "share of busy time")
    for stage, seconds in sorted(runs[0]["stage_seconds"].items(), key=lambda kv: -kv[1]):
        stages.add_row(stage, f"{seconds:.2f}", f"{seconds / runs[0]['seconds']:.0%}")
    stages.add_row("other (poll, commit, accounting)", f"{runs[0]['seconds'] - sum(runs[0]['stage_seconds'].values()):.2f}",
                   f"{1 - sum(runs[0]['stage_seconds'].values()) / runs[0]['seconds']:.0%}")
    console.print(stages)
    console.print(f"storage lag at {lag['offered_events_per_s']:,.0f} events/s offered (Kafka timestamp to "
                  f"committed after every tier): p50 {lag['p50_s']:.3f} s, p99 {lag['p99_s']:.3f} s "
                  f"(median of {lag['repeats']})")
    out = ROOT / "bench" / "results" / "ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"validator": validator, "end_to_end": runs, "storage_lag": lag,
                               "measured_at": datetime.now(timezone.utc).isoformat()}, indent=2))
    console.print(f"written {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
