"""The activity event's identity (derived ids) and its timestamp text; its columnar shape is the
contract's (``feedstore.contract.events.EVENT_SCHEMA``)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone

import numpy as np

# Namespace for event ids derived from content; fixed forever (changing it re-ids history).
EVENT_NAMESPACE = uuid.UUID("6f1c0e9a-52d4-4c1e-9a7b-2f0b3e8c7d11")
_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


def format_timestamp(ts: datetime) -> str:
    """ISO-8601 UTC with a ``Z``, as the seed's example writes it (fractional seconds trimmed)."""
    if ts.tzinfo is not timezone.utc:
        ts = ts.astimezone(timezone.utc)
    text = ts.isoformat(timespec="microseconds")
    micro = text[20:26].rstrip("0")
    return f"{text[:19]}.{micro}Z" if micro else f"{text[:19]}Z"


def format_timestamps_us(ts_us: np.ndarray) -> list[str]:
    """``format_timestamp`` for a column of UTC epoch microseconds (years 1000-9999), with the
    date and time part formatted by numpy for the whole column at once."""
    ts_us = np.asarray(ts_us, dtype=np.int64)
    seconds = np.datetime_as_string((ts_us // 1_000_000).astype("datetime64[s]"), unit="s").tolist()
    micros = (ts_us % 1_000_000).tolist()
    return [f"{s}.{m:06d}".rstrip("0") + "Z" if m else f"{s}Z" for s, m in zip(seconds, micros)]


def event_ids_text(user_ids: list[int], item_ids: list[int], event_types: list[str], ts_us: np.ndarray,
                   session_ids: list[str | None]) -> list[str]:
    """``derive_event_id`` for a batch, as canonical text: the consumer's per-event hot path."""
    return [_uuid5_text(f"{u}|{i}|{t}|{ts}|{s or ''}")
            for u, i, t, ts, s in zip(user_ids, item_ids, event_types, format_timestamps_us(ts_us), session_ids)]


def event_id_text(user_id: int, item_id: int, event_type: str, timestamp: datetime,
                  session_id: str | None) -> str:
    """The UUIDv5 of ``derive_event_id`` as canonical text, without building a UUID object."""
    return _uuid5_text(f"{user_id}|{item_id}|{event_type}|{format_timestamp(timestamp)}|{session_id or ''}")


def _uuid5_text(name: str) -> str:
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def derive_event_id(user_id: int, item_id: int, event_type: str, timestamp: datetime,
                    session_id: str | None) -> uuid.UUID:
    """UUIDv5 of the event's content, so a re-sent event without ``event_id`` is the same event."""
    return uuid.UUID(event_id_text(user_id, item_id, event_type, timestamp, session_id))
