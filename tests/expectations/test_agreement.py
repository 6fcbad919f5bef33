"""Agreement: on a corpus with every kind of defect (devtools.synthetic.defects), the consumer's validator
(ingestion.validation) and the ``activity_events`` suite refuse the same events.

The suite validates landed rows, typed by EVENT_SCHEMA; the consumer validates wire JSON. So the
corpus reaches GX through ``landed_row``, which only *types* a line (JSON values into the row's
column types, missing fields as nulls) and judges no value. A line it cannot type (bad encoding,
not JSON, non-digit ids, ids beyond int64, zone-less timestamps...) can never be a landed row:
the consumer must refuse every such line. Every line it can type, GX must judge like the consumer:
first the row rules, then duplicates among the rows both accept (the consumer dedups valid
events only, so landed data holds each event once).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from devtools.synthetic import generator
from devtools.synthetic.defects import inject_defects
from expectations.runner import validate
from feedstore.contract.events import EVENT_SCHEMA
from feedstore.contract.rules import Reason
from ingestion.events import derive_event_id
from ingestion.validation import Validator
from tests.expectations.conftest import ITEM_IDS, NOW, USER_IDS, make_events

pytestmark = pytest.mark.pure

INT64_MAX = 2**63 - 1


def _as_int(value: Any) -> int:
    if type(value) is int and -INT64_MAX - 1 <= value <= INT64_MAX:
        return value
    raise TypeError(value)


def _as_id(value: Any) -> int:
    """Ids travel as digit strings (the seed's shape) or JSON integers."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    return _as_int(value)


def _as_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(value)


def _as_time(value: Any) -> datetime:
    ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise TypeError(value)
    return ts


def landed_row(line: bytes) -> dict | None:
    """The row a line would land as, or None when it has no typed form."""
    try:
        obj = json.loads(line.decode("utf-8"))
        if not isinstance(obj, dict):
            return None
        ctx = obj.get("context") or {}
        if not isinstance(ctx, dict):
            return None
        row = {
            "user_id": None if obj.get("user_id") is None else _as_id(obj["user_id"]),
            "item_id": None if obj.get("item_id") is None else _as_id(obj["item_id"]),
            "event_type": _as_str(obj.get("event_type")),
            "timestamp": None if obj.get("timestamp") is None else _as_time(_as_str(obj["timestamp"])),
            "dwell_time_ms": None if obj.get("dwell_time_ms") is None else _as_int(obj["dwell_time_ms"]),
            "device": _as_str(ctx.get("device")), "platform": _as_str(ctx.get("platform")),
            "session_id": _as_str(ctx.get("session_id")), "event_id": _as_str(obj.get("event_id")),
        }
        pa.array([row["dwell_time_ms"]], pa.int32())
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError, OverflowError, pa.ArrowInvalid):
        return None
    keys = (row["user_id"], row["item_id"], row["event_type"], row["timestamp"])
    if row["event_id"] is None and None not in keys:
        row["event_id"] = str(derive_event_id(*keys, row["session_id"]))
    return row


def _known(ids: np.ndarray) -> callable:
    return lambda values: np.isin(values, ids)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[bytes], list[Reason | None]]:
    valid = [x.encode() for x in generator.event_json(make_events(300)).to_pylist()]
    return inject_defects(valid, copies=2, duplicates=15, now=NOW, seed=5)


def _refused(summary, skip: str | None = None) -> set[int]:
    return {r for f in summary.failures if f.rule != skip for r in (f.rows or [])}


def test_suite_and_consumer_refuse_the_same_events(corpus) -> None:
    lines, labels = corpus
    consumer = Validator(_known(USER_IDS), _known(ITEM_IDS)).validate(lines, now=NOW).reasons(len(lines))
    assert consumer == labels  # the corpus is what the injector says it is

    rows = [landed_row(x) for x in lines]
    untyped = [consumer[i] for i, r in enumerate(rows) if r is None]
    assert untyped and None not in untyped and Reason.DUPLICATE not in untyped

    typed = [i for i, r in enumerate(rows) if r is not None]
    table = pa.Table.from_pylist([rows[i] for i in typed], schema=EVENT_SCHEMA.remove_metadata()).cast(
        pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA]))
    params = {"ingested_at": NOW, "user_ids": USER_IDS, "item_ids": ITEM_IDS}
    summary = validate("activity_events", table, with_rows=True, **params)
    gx_refused = {typed[j] for j in _refused(summary, skip="no_duplicate_events")}
    consumer_refused = {i for i in typed if consumer[i] not in (None, Reason.DUPLICATE)}
    assert gx_refused == consumer_refused
    kinds = {consumer[i] for i in consumer_refused}
    assert len(kinds) >= 8, kinds  # the typed part still covers most kinds of defect

    kept = [j for j in range(len(typed)) if typed[j] not in gx_refused]
    landed = validate("activity_events", table.take(kept), with_rows=True, **params)
    assert landed.failed_rules == {"no_duplicate_events"}
    gx_duplicate_ids = {table.column("event_id")[kept[j]].as_py() for j in _refused(landed)}
    consumer_duplicate_ids = {rows[i]["event_id"] for i in typed if consumer[i] is Reason.DUPLICATE}
    assert gx_duplicate_ids == consumer_duplicate_ids and consumer_duplicate_ids
