"""The activity event as every tier stores it: one row per event, the wire message's ``context``
flattened into columns. The validator builds these rows, the sinks write them, the archive and
the Great Expectations suite read them."""

from __future__ import annotations

import pyarrow as pa

EVENT_SCHEMA = pa.schema([
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("user_id", pa.int64(), nullable=False),
    pa.field("item_id", pa.int64(), nullable=False),
    pa.field("event_type", pa.string(), nullable=False),
    pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("dwell_time_ms", pa.int32()),
    pa.field("device", pa.string()),
    pa.field("platform", pa.string()),
    pa.field("session_id", pa.string()),
])
