"""Catalog and profile record validation, stack-free: one case per reason, the row and columnar
paths agree, and the newest version of each id is the one kept."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from feedstore.contract import rules
from feedstore.contract.rules import Reason
from ingestion.catalog_stream import latest_per_key
from ingestion.records import ITEMS, USERS, RecordValidator, validate_table

pytestmark = pytest.mark.pure
NOW = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
ITEM = {"item_id": "5", "creator_id": "6", "media_type": "video", "created_at": "2025-01-01T00:00:00Z",
        "category": "tech", "tags": ["a"], "content_embedding": [0.5] * 32}


def with_(**fields) -> bytes:
    return json.dumps({**ITEM, **fields}).encode()


ITEM_CASES = [
    (b"\xff", Reason.BAD_ENCODING), (b"{", Reason.BAD_JSON), (b"[]", Reason.NOT_AN_OBJECT), (None, Reason.BAD_JSON),
    (b'{"item_id": "5"}', Reason.MISSING_FIELD), (with_(media_type=None), Reason.MISSING_FIELD),
    (with_(tags=3), Reason.WRONG_TYPE), (with_(item_id="x5"), Reason.BAD_ID),
    (with_(creator_id=str(2**63)), Reason.ID_OUT_OF_RANGE), (with_(created_at="2025-01-01"), Reason.BAD_TIMESTAMP),
    (with_(category="astrology"), Reason.BAD_VOCABULARY), (with_(content_embedding=[1.0] * 3), Reason.BAD_EMBEDDING),
    (with_(content_embedding=[1e400] * 32), Reason.BAD_JSON),
    (with_(created_at="1899-12-31T23:59:59Z"), Reason.BAD_RECORD), (b"x" * (rules.MAX_MESSAGE_BYTES + 1), Reason.TOO_LARGE),
]


def test_each_item_reason_and_every_record_only_reason_has_a_case():
    result = RecordValidator(ITEMS).validate([with_()] + [p for p, _ in ITEM_CASES], now=NOW)
    assert result.reasons(len(ITEM_CASES) + 1) == [None] + [r for _, r in ITEM_CASES]
    assert set(rules.RECORD_ONLY_REASONS) <= {r for _, r in ITEM_CASES}


def test_the_columnar_path_agrees_with_the_row_path():
    rows = [json.loads(with_(item_id=str(i), updated_at=None)) for i in range(1, 9)]
    rows[1]["category"] = "astrology"
    rows[2]["content_embedding"] = [float("inf")] * 32
    rows[3]["tags"] = ["x" * 101]
    rows[4]["updated_at"] = "2024-01-01T00:00:00Z"  # before created_at
    rows[5]["created_at"] = "1955-05-05T00:00:00Z"
    rows[6]["category"] = None
    table = pa.Table.from_pylist(rows)
    stamp = pa.timestamp("us", tz="UTC")
    for name in ("created_at", "updated_at"):
        col = [datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None for v in table[name].to_pylist()]
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(col, stamp))
    table = table.set_column(0, "item_id", pa.array(range(1, 9), pa.int64())) \
        .set_column(1, "creator_id", pa.array([6] * 8, pa.int64()))
    validator = RecordValidator(ITEMS)
    columnar = validate_table(validator, table, now=NOW)
    by_rows = validator.validate_objects(table.to_pylist(), now=NOW)
    assert columnar.rejected == by_rows.rejected == [(1, Reason.BAD_VOCABULARY), (2, Reason.BAD_EMBEDDING),
                                                     (3, Reason.BAD_RECORD), (4, Reason.BAD_RECORD)]
    assert columnar.valid_index.tolist() == by_rows.valid_index.tolist() == [0, 5, 6, 7]
    assert columnar.valid.equals(by_rows.valid)


def test_users_refuse_unknown_vocabulary_and_nest_follows():
    good = {"user_id": 9, "created_at": "2024-01-15T00:00:00Z", "demographics": {"country": "US"},
            "preferences": {"categories": ["tech"], "following": ["3", 4, "3"]}}
    bad = {**good, "demographics": {"language": "tlh"}}
    result = RecordValidator(USERS).validate([json.dumps(good).encode(), json.dumps(bad).encode()], now=NOW)
    assert result.rejected == [(1, Reason.BAD_VOCABULARY)] and "tlh" in result.errors[1]
    assert result.valid.column("following").to_pylist() == [[3, 4]]


def test_latest_per_key_keeps_the_newest_version_and_the_last_on_a_tie():
    ts = pa.timestamp("us", tz="UTC")
    t = pa.table({"item_id": [1, 1, 2, 2, 1], "version": pa.array([5, 9, 3, 3, 7], pa.int64()).cast(ts),
                  "n": [0, 1, 2, 3, 4]})
    out = latest_per_key(t, "item_id")
    assert sorted(zip(out["item_id"].to_pylist(), out["n"].to_pylist())) == [(1, 1), (2, 3)]
    assert np.all(np.diff(out["item_id"].to_numpy()) > 0)
