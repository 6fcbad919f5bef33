"""The activity event: its identity and its columnar shape, shared by every sink."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pyarrow as pa

# Namespace for event ids derived from content; fixed forever (changing it re-ids history).
EVENT_NAMESPACE = uuid.UUID("6f1c0e9a-52d4-4c1e-9a7b-2f0b3e8c7d11")

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


def format_timestamp(ts: datetime) -> str:
    """ISO-8601 UTC with a ``Z``, as the seed's example writes it."""
    ts = ts.astimezone(timezone.utc)
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    return text + "Z"


def derive_event_id(user_id: int, item_id: int, event_type: str, timestamp: datetime,
                    session_id: str | None) -> uuid.UUID:
    """UUIDv5 of the event's content, so a re-sent event without ``event_id`` is the same event."""
    name = "|".join([str(user_id), str(item_id), event_type, format_timestamp(timestamp), session_id or ""])
    return uuid.uuid5(EVENT_NAMESPACE, name)
