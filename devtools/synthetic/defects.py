"""Labelled bad input: valid event lines with every kind of defect mixed in, and the reason the
validator must give each line. Used by the ingestion tests and the Great Expectations agreement
test, so both sides check the same cases.

    lines, reasons = inject_defects(valid_lines)
    # lines[i] is bytes; reasons[i] is None (stored), Reason.DUPLICATE (dropped as a repeat)
    # or the Reason the validator must refuse it with (and the DLQ header must carry).

The valid lines must be events that pass on their own (known user and item, recent
timestamp, as of ``now``). Every defect kind appears ``copies`` times; each defect line is
derived from a random valid line, and repeats are placed after their original.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

from feedstore.contract import rules
from feedstore.contract.rules import Reason
from ingestion.events import format_timestamp

TEN_MB = 10 * 1024 * 1024
Event = dict
Mutation = Callable[[Event], bytes]


def _dump(event: Event) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def _with(**changes) -> Mutation:
    def apply(event: Event) -> bytes:
        return _dump({**event, **changes})
    return apply


def _without(name: str) -> Mutation:
    return lambda event: _dump({k: v for k, v in event.items() if k != name})


def _with_context(**changes) -> Mutation:
    return lambda event: _dump({**event, "context": {**(event.get("context") or {}), **changes}})


def _defects(now: datetime, max_age: int, max_future: int, unknown_user: int,
             unknown_item: int) -> list[tuple[Reason, Mutation]]:
    old = format_timestamp(now - timedelta(seconds=max_age + 120))
    future = format_timestamp(now + timedelta(seconds=max_future + 600))
    return [
        (Reason.BAD_ENCODING, lambda e: _dump(e).replace(b'"event_type"', b'"event_\xff\xfetype"')),
        (Reason.BAD_JSON, lambda e: _dump(e)[:-7]),
        (Reason.BAD_JSON, lambda e: b""),
        (Reason.NOT_AN_OBJECT, lambda e: b"[" + _dump(e) + b"]"),
        (Reason.NOT_AN_OBJECT, lambda e: str(e["user_id"]).encode()),
        (Reason.NOT_AN_OBJECT, lambda e: b"null"),
        *[(Reason.MISSING_FIELD, _without(f)) for f in rules.REQUIRED_EVENT_FIELDS],
        (Reason.MISSING_FIELD, _with(user_id=None)),
        (Reason.WRONG_TYPE, _with(user_id=12.5)),
        (Reason.WRONG_TYPE, _with(item_id=True)),
        (Reason.WRONG_TYPE, _with(event_type=3)),
        (Reason.WRONG_TYPE, _with(timestamp=1_700_000_000)),
        (Reason.WRONG_TYPE, _with(dwell_time_ms="5420")),
        (Reason.WRONG_TYPE, _with(dwell_time_ms=5420.5)),
        (Reason.WRONG_TYPE, _with(event_id=7)),
        (Reason.BAD_ID, _with(user_id="12a")),
        (Reason.BAD_ID, _with(item_id="-5")),
        (Reason.BAD_ID, _with(user_id="")),
        (Reason.BAD_ID, _with(item_id=" 42")),
        (Reason.ID_OUT_OF_RANGE, _with(user_id=str(rules.BIGINT_MAX + 1))),
        (Reason.ID_OUT_OF_RANGE, _with(item_id=2**64)),
        (Reason.ID_OUT_OF_RANGE, _with(user_id=0)),
        (Reason.ID_OUT_OF_RANGE, _with(item_id=-7)),
        (Reason.ID_OUT_OF_RANGE, _with(user_id="9" * 40)),
        (Reason.BAD_EVENT_ID, _with(event_id="not-a-uuid")),
        (Reason.BAD_TIMESTAMP, _with(timestamp="yesterday")),
        (Reason.BAD_TIMESTAMP, lambda e: _dump({**e, "timestamp": now.replace(tzinfo=None).isoformat()})),
        (Reason.TOO_OLD, _with(timestamp=old)),
        (Reason.IN_FUTURE, _with(timestamp=future)),
        (Reason.BAD_EVENT_TYPE, _with(event_type="click")),
        (Reason.BAD_EVENT_TYPE, _with(event_type="VIEW")),
        (Reason.BAD_DWELL, _with(dwell_time_ms=-1)),
        (Reason.BAD_DWELL, _with(dwell_time_ms=rules.MAX_DWELL_MS + 1)),
        (Reason.BAD_CONTEXT, _with(context="mobile")),
        (Reason.BAD_CONTEXT, _with(context=["mobile"])),
        (Reason.BAD_CONTEXT, _with_context(device=5)),
        (Reason.BAD_CONTEXT, _with_context(device="toaster")),
        (Reason.BAD_CONTEXT, _with_context(platform={"os": "ios"})),
        (Reason.BAD_CONTEXT, _with_context(session_id="s" * (rules.MAX_SESSION_ID_LENGTH + 1))),
        (Reason.BAD_CONTEXT, _with_context(session_id="tab\there")),
        (Reason.UNKNOWN_USER, _with(user_id=str(unknown_user))),
        (Reason.UNKNOWN_ITEM, _with(item_id=str(unknown_item))),
        (Reason.TOO_LARGE, _with_context(session_id="x" * TEN_MB)),
    ]


def _resent(event: Event) -> bytes:
    """The same event as a producer retry might re-encode it: keys reordered, timestamp with an
    explicit offset and trailing zeros, ids as integers. Same content, so the same event id."""
    ts = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    again = {**event, "user_id": int(event["user_id"]), "item_id": int(event["item_id"]),
             "timestamp": ts.isoformat(timespec="microseconds")}
    return json.dumps(dict(reversed(list(again.items())))).encode()


def inject_defects(valid_lines: Sequence[bytes | str], *, copies: int = 1, duplicates: int = 10,
                   now: datetime | None = None, max_age_seconds: int = rules.MAX_EVENT_AGE_SECONDS,
                   max_future_seconds: int = rules.MAX_FUTURE_SKEW_SECONDS,
                   unknown_user_id: int = rules.BIGINT_MAX, unknown_item_id: int = rules.BIGINT_MAX,
                   seed: int = 0) -> tuple[list[bytes], list[Reason | None]]:
    """Returns ``(lines, reasons)``: the valid lines (reason None), ``copies`` of every defect,
    ``duplicates`` exact repeats and ``duplicates`` re-encoded re-sends without ``event_id``
    (both ``Reason.DUPLICATE``), shuffled in, each repeat after its original.

    ``unknown_user_id`` / ``unknown_item_id`` must not exist in the catalog (the defaults,
    BIGINT_MAX, are never generated). ``now`` is the validation time the clock defects are
    relative to; the caller validates within a few minutes of it.
    """
    if not valid_lines:
        raise ValueError("inject_defects needs at least one valid line to derive defects from")
    rng = random.Random(seed)
    now = now or datetime.now(timezone.utc)
    lines = [x.encode() if isinstance(x, str) else bytes(x) for x in valid_lines]
    events = [json.loads(x) for x in lines]
    # entries: [line, reason, index of the valid line it repeats (or None)]
    labelled: list[list] = [[x, None, j] for j, x in enumerate(lines)]
    for _ in range(copies):
        for reason, mutate in _defects(now, max_age_seconds, max_future_seconds, unknown_user_id, unknown_item_id):
            labelled.insert(rng.randint(0, len(labelled)), [mutate(rng.choice(events)), reason, None])
    repeats: list[tuple[int, bytes]] = []
    for _ in range(duplicates):
        j = rng.randrange(len(lines))
        if "event_id" in events[j]:  # a re-send without event_id needs an original without one
            events[j] = {k: v for k, v in events[j].items() if k != "event_id"}
            lines[j] = _dump(events[j])
            _original(labelled, j)[0] = lines[j]
        repeats.append((j, _resent(events[j])))
    for _ in range(duplicates):
        j = rng.randrange(len(lines))
        repeats.append((j, lines[j]))
    for j, line in repeats:
        after = labelled.index(_original(labelled, j))
        labelled.insert(rng.randint(after + 1, len(labelled)), [line, Reason.DUPLICATE, j])
    return [e[0] for e in labelled], [e[1] for e in labelled]


def _original(labelled: list[list], j: int) -> list:
    return next(e for e in labelled if e[2] == j and e[1] is None)
