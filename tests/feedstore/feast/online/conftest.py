"""The online store's tables: two versions per entity and view, materialized once for the
package (reads and writes check the same rows)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from devtools.synthetic import features as synthetic
from feedstore.feast.engine import materialize

HOUR_US = 3_600_000_000
USER_IDS = np.arange(1, 41)
ITEM_IDS = np.arange(1001, 1081)
USER_VIEWS = ["user_activity_features", "user_profile_features", "user_embedding", "user_candidates",
              "user_realtime_features"]
ITEM_VIEWS = ["item_catalog_features", "item_embedding", "item_engagement_features"]


def now_us() -> int:
    return time.time_ns() // 1000


def latest(table: pa.Table, key: str) -> dict[int, dict]:
    rows = table.sort_by([(key, "ascending"), ("event_timestamp", "ascending")]).to_pylist()
    return {r[key]: r for r in rows}  # the last row per id is the newest


@pytest.fixture(scope="package")
def online_tables(fs, settings):
    """Two versions per entity (older one written later, as a late file) then materialized."""
    now = now_us()
    tables = {}
    for seed, name in enumerate(USER_VIEWS + ITEM_VIEWS):
        view = fs.get_feature_view(name)
        ids = USER_IDS if name in USER_VIEWS else ITEM_IDS
        newest = now - (10 + seed) * 60_000_000  # within every TTL (realtime: 1h)
        new = synthetic.frame(view, ids, np.full(len(ids), newest), seed=seed)
        old = synthetic.frame(view, ids, np.full(len(ids), newest - 20 * 60_000_000), seed=100 + seed)
        synthetic.write(name, new, settings, part="a-new")
        synthetic.write(name, old, settings, part="b-late")
        tables[name] = new
    end = datetime.now(timezone.utc)
    materialize(fs, None, end - timedelta(days=8), end)
    return tables


def expected_rows(tables, ids_user, ids_item):
    rows = []
    for u, i in zip(ids_user, ids_item):
        row = {"user_id": u, "item_id": i}
        for name, table in tables.items():
            key = "user_id" if name in USER_VIEWS else "item_id"
            newest = latest(table, key).get(u if key == "user_id" else i)
            for col in table.column_names:
                if col not in ("user_id", "item_id", "event_timestamp"):
                    row[col] = newest[col] if newest else None
        rows.append(row)
    return rows


def write_at(fs, name: str, ids, ts_us: int, seed: int):
    view = fs.get_feature_view(name)
    table = synthetic.frame(view, ids, np.full(len(ids), ts_us), seed=seed)
    store = fs._get_provider().online_store
    store.write_arrow(fs.config, view, table)
    return table
