"""The event validator: raw Kafka payloads in, valid rows (an Arrow table) and reason codes out.

Pure: no I/O besides the two membership lookups it is given. The hot path decodes each
payload with msgspec straight into a typed struct (C, ~0.4 µs), does the few per-event
checks that need Python on plain attributes, and runs the range, clock and catalog checks
over whole columns with numpy. A payload that msgspec refuses is rare and goes through
``classify_structure``, which names the reason with the same type rules (``msgspec.convert``).
Reasons follow a fixed precedence, the order of the checks below, so one line has one reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import msgspec
import numpy as np
import pyarrow as pa

from feedstore.contract import rules
from feedstore.contract.events import EVENT_SCHEMA
from feedstore.contract.rules import Reason
from feedstore.logs import get_logger
from ingestion.events import event_ids_text

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Membership = Callable[[np.ndarray], np.ndarray]


class Context(msgspec.Struct):
    device: str | None = None
    platform: str | None = None
    session_id: str | None = None


class Event(msgspec.Struct):
    """The wire shape; value rules (ranges, vocabularies) are checked after decoding."""

    user_id: str | int
    item_id: str | int
    event_type: str
    timestamp: AwareDatetime
    context: Context | None = None
    dwell_time_ms: int | None = None
    event_id: str | None = None


_decoder = msgspec.json.Decoder(Event)
log = get_logger("feedstore.ingest")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_EVENT_TYPES = frozenset(rules.EVENT_TYPES)
_DEVICES = frozenset(rules.DEVICES)
_PLATFORMS = frozenset(rules.PLATFORMS)
_FIELD_TYPES: dict[str, Any] = {
    "user_id": str | int, "item_id": str | int, "event_type": str, "dwell_time_ms": int | None,
    "event_id": str | None,
}


@dataclass(frozen=True)
class Limits:
    """The clock bounds; ``replay`` (backfills) widens the age bound to years."""

    max_age_seconds: int = rules.MAX_EVENT_AGE_SECONDS
    max_future_seconds: int = rules.MAX_FUTURE_SKEW_SECONDS
    replay: bool = False
    partition_days_back: int | None = None
    """Days (UTC) before today whose activity partition the consumer may create (None: no bound). An event
    outside ``[today - back, today + ahead]`` by the consumer's clock is refused here, before Postgres
    refuses the partition (migration 008) for the whole batch; see ``settings.postgres.partition_days_*``."""
    partition_days_ahead: int | None = None
    keep_repeats: bool = False
    """Leave copies of one event id within the batch to the dedup stage (the consumer: which copy is
    the event is what Postgres stored first, perhaps in an earlier attempt at a differently cut
    batch, not the first in this batch)."""

    @property
    def effective_max_age_seconds(self) -> int:
        return max(self.max_age_seconds, rules.REPLAY_MAX_EVENT_AGE_SECONDS) if self.replay else self.max_age_seconds


@dataclass
class Result:
    """``valid`` rows carry EVENT_SCHEMA columns; ``valid_index[i]`` is the payload row i came from."""

    valid: pa.Table
    valid_index: np.ndarray
    rejected: list[tuple[int, Reason]] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    """Payload index -> the exception class, for ``INTERNAL_ERROR`` rejects."""

    def reasons(self, n: int) -> list[Reason | None]:
        """One entry per payload: its reason, ``DUPLICATE`` for a repeat, None when stored."""
        out: list[Reason | None] = [None] * n
        for i, reason in self.rejected:
            out[i] = reason
        for i in self.duplicates:
            out[i] = Reason.DUPLICATE
        return out


def parse_id(value: str | int) -> int | Reason:
    """Ids are ASCII digit strings or JSON integers inside [MIN_ID, BIGINT_MAX]."""
    if type(value) is str:
        if not (value.isascii() and value.isdigit()):
            return Reason.BAD_ID
        if len(value.lstrip("0")) > 19:
            return Reason.ID_OUT_OF_RANGE
        value = int(value)
    if rules.MIN_ID <= value <= rules.BIGINT_MAX:
        return value
    return Reason.ID_OUT_OF_RANGE


def _check_context(ctx: Context | None) -> Reason | None:
    if ctx is None:
        return None
    if ctx.device is not None and ctx.device not in _DEVICES:
        return Reason.BAD_CONTEXT
    if ctx.platform is not None and ctx.platform not in _PLATFORMS:
        return Reason.BAD_CONTEXT
    s = ctx.session_id
    if s is not None and (len(s) > rules.MAX_SESSION_ID_LENGTH or not s.isprintable()):
        return Reason.BAD_CONTEXT
    return None


def _canonical_event_id(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def check_event(ev: Event) -> tuple | Reason:
    """Per-event checks that need Python; returns the normalised row (event id None when the
    event has none: ``_to_table`` derives those for the whole batch) or the reason."""
    user_id = parse_id(ev.user_id)
    if type(user_id) is Reason:
        return user_id
    item_id = parse_id(ev.item_id)
    if type(item_id) is Reason:
        return item_id
    event_id = None
    if ev.event_id is not None:
        event_id = _canonical_event_id(ev.event_id)
        if event_id is None:
            return Reason.BAD_EVENT_ID
    if ev.event_type not in _EVENT_TYPES:
        return Reason.BAD_EVENT_TYPE
    dwell = ev.dwell_time_ms
    if dwell is not None and not 0 <= dwell <= rules.MAX_DWELL_MS:
        return Reason.BAD_DWELL
    ctx = ev.context
    reason = _check_context(ctx)
    if reason is not None:
        return reason
    session = ctx.session_id if ctx is not None else None
    return (event_id, user_id, item_id, ev.event_type, (ev.timestamp - _EPOCH) // _MICROSECOND, dwell,
            ctx.device if ctx is not None else None, ctx.platform if ctx is not None else None, session)


def classify_structure(payload: bytes) -> Reason:
    """Why msgspec refused a payload, with the same type rules; the slow path, for rejects only."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return Reason.BAD_ENCODING
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        return Reason.BAD_JSON
    if not isinstance(obj, dict):
        return Reason.NOT_AN_OBJECT
    for name in rules.REQUIRED_EVENT_FIELDS:
        if obj.get(name) is None:
            return Reason.MISSING_FIELD
    for name, typ in _FIELD_TYPES.items():
        if name in obj and not _converts(obj[name], typ):
            return Reason.WRONG_TYPE
    if not isinstance(obj["timestamp"], str):
        return Reason.WRONG_TYPE
    if not _converts(obj["timestamp"], AwareDatetime):
        return Reason.BAD_TIMESTAMP
    if obj.get("context") is not None and not _converts(obj["context"], Context):
        return Reason.BAD_CONTEXT
    return Reason.BAD_JSON  # e.g. NaN or numbers msgspec refuses; nothing names it better


def _converts(value: Any, typ: Any) -> bool:
    try:
        msgspec.convert(value, typ)
        return True
    except msgspec.ValidationError:
        return False


class Validator:
    """Validates batches against the rules, the clock and the catalog."""

    def __init__(self, users: Membership, items: Membership, limits: Limits | None = None) -> None:
        self.users = users
        self.items = items
        self.limits = limits or Limits()

    def validate(self, payloads: Sequence[bytes | None], now: datetime | None = None,
                 arrived_us: Sequence[int] | np.ndarray | None = None) -> Result:
        """``arrived_us[i]``: when payload i reached Kafka (µs, -1 when unknown). An event's age and
        skew are judged against it, so a backlog consumed after an outage is as fresh as it arrived."""
        rejected: list[tuple[int, Reason]] = []
        rows: list[tuple] = []
        index: list[int] = []
        decode = _decoder.decode
        errors: dict[int, str] = {}
        for i, payload in enumerate(payloads):
            try:
                row = self._check_one(payload, decode)
            except Exception as exc:  # no message may stop ingestion: this one goes to the DLQ
                log.warning("validation_raised", error=type(exc).__name__, detail=str(exc)[:200])
                row, errors[i] = Reason.INTERNAL_ERROR, type(exc).__name__
            if type(row) is Reason:
                rejected.append((i, row))
            else:
                rows.append(row)
                index.append(i)
        table = pa.Table.from_pylist([], schema=EVENT_SCHEMA) if not rows else _to_table(rows)
        idx = np.asarray(index, dtype=np.int64)
        keep, late = self._vector_checks(table, _reference_us(idx, now, arrived_us), _today(now))
        rejected.extend((int(idx[j]), reason) for j, reason in late)
        table, idx = table.filter(pa.array(keep)), idx[keep]
        keep, duplicates = _first_occurrences(table.column("event_id").to_pylist())
        if duplicates and not self.limits.keep_repeats:
            table, dup_idx, idx = table.filter(pa.array(keep)), idx[~keep], idx[keep]
        else:
            dup_idx = np.empty(0, dtype=np.int64)
        rejected.sort()
        return Result(table, idx, rejected, sorted(int(i) for i in dup_idx), errors)

    @staticmethod
    def _check_one(payload: bytes | None, decode) -> tuple | Reason:
        if payload is None:
            return Reason.BAD_JSON
        if len(payload) > rules.MAX_MESSAGE_BYTES:
            return Reason.TOO_LARGE
        try:
            ev = decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return classify_structure(payload)
        return check_event(ev)

    def _vector_checks(self, table: pa.Table, now_us: np.ndarray,
                       today: int) -> tuple[np.ndarray, list[tuple[int, Reason]]]:
        """Clock bounds, partition window and catalog membership over whole columns; returns a keep
        mask and rejects. ``today``: the consumer's UTC day (days since the epoch)."""
        n = table.num_rows
        keep = np.ones(n, dtype=bool)
        if n == 0:
            return keep, []
        reasons = np.full(n, -1, dtype=np.int8)
        codes = [Reason.TOO_OLD, Reason.IN_FUTURE, Reason.UNKNOWN_USER, Reason.UNKNOWN_ITEM,
                 Reason.OUTSIDE_PARTITION_WINDOW]
        ts = table.column("timestamp").cast(pa.int64()).to_numpy()
        reasons[ts < now_us - self.limits.effective_max_age_seconds * 1_000_000] = 0
        reasons[(reasons < 0) & (ts > now_us + self.limits.max_future_seconds * 1_000_000)] = 1
        back, ahead = self.limits.partition_days_back, self.limits.partition_days_ahead
        if back is not None or ahead is not None:  # what the clock bounds let through (a replay) Postgres may not store
            day = ts // _DAY_US
            outside = np.zeros(n, dtype=bool)
            if back is not None:
                outside |= day < today - back
            if ahead is not None:
                outside |= day > today + ahead
            reasons[(reasons < 0) & outside] = 4
        pending = reasons < 0
        users = table.column("user_id").to_numpy()
        if pending.any():
            known = np.ones(n, dtype=bool)
            known[pending] = self.users(users[pending])
            reasons[pending & ~known] = 2
        pending = reasons < 0
        if pending.any():
            items = table.column("item_id").to_numpy()
            known = np.ones(n, dtype=bool)
            known[pending] = self.items(items[pending])
            reasons[pending & ~known] = 3
        keep = reasons < 0
        return keep, [(int(j), codes[reasons[j]]) for j in np.flatnonzero(~keep)]


_DAY_US = 86_400_000_000


def _today(now: datetime | None) -> int:
    """The UTC day of ``now`` (the clock when None), in days since the epoch, as Postgres counts
    ``ensure_activity_partitions``' window (``now() AT TIME ZONE 'UTC'``)."""
    return int((now or datetime.now(timezone.utc)).timestamp() * 1_000_000) // _DAY_US


def _reference_us(idx: np.ndarray, now: datetime | None, arrived_us: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """Per valid row, the instant its age is measured at: its arrival in Kafka, else the clock."""
    now_us = int((now or datetime.now(timezone.utc)).timestamp() * 1_000_000)
    if arrived_us is None:
        return np.full(len(idx), now_us, dtype=np.int64)
    arrived = np.asarray(arrived_us, dtype=np.int64)[idx]
    return np.where(arrived > 0, arrived, now_us)


def warm_up() -> None:
    """The first use of a time-zone-aware Arrow type loads the time zone database (~1 s here):
    pay it at start-up, not in the first batch."""
    pa.array([0], type=pa.int64()).cast(EVENT_SCHEMA.field("timestamp").type).cast(pa.int64())


def _to_table(rows: list[tuple]) -> pa.Table:
    """Timestamps arrive as integer microseconds: pyarrow's datetime conversion is far slower."""
    cols = list(zip(*rows))
    missing = [j for j, eid in enumerate(cols[0]) if eid is None]
    if missing:
        pick = lambda c: [cols[c][j] for j in missing]  # noqa: E731
        derived = event_ids_text(pick(1), pick(2), pick(3), np.asarray(pick(4), dtype=np.int64), pick(8))
        ids = list(cols[0])
        for j, eid in zip(missing, derived):
            ids[j] = eid
        cols[0] = ids
    arrays = [pa.array(c, type=pa.int64()).cast(f.type) if f.name == "timestamp" else pa.array(c, type=f.type)
              for c, f in zip(cols, EVENT_SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def _first_occurrences(event_ids: list[str]) -> tuple[np.ndarray, bool]:
    seen: set[str] = set()
    keep = np.ones(len(event_ids), dtype=bool)
    for j, eid in enumerate(event_ids):
        if eid in seen:
            keep[j] = False
        else:
            seen.add(eid)
    return keep, not keep.all()
