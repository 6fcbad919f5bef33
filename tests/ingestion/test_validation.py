"""The validator alone: every reason code, the duplicate rule, and agreement with the defect
injector. No services."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from devtools.synthetic.defects import inject_defects
from feedstore.contract import rules
from feedstore.contract.rules import Reason
from feedstore.ids import IdIndex
from ingestion.events import derive_event_id, format_timestamp
from ingestion.validation import Limits, Validator, classify_structure, parse_id
from tests.ingestion.conftest import ITEM_IDS, USER_IDS, valid_lines

pytestmark = pytest.mark.pure

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture()
def validator() -> Validator:
    return Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains)


def _event(**changes) -> bytes:
    base = {"user_id": str(USER_IDS[0]), "item_id": str(ITEM_IDS[0]), "event_type": "view",
            "timestamp": format_timestamp(NOW - timedelta(minutes=5)),
            "context": {"device": "mobile", "platform": "ios", "session_id": "abc123"}, "dwell_time_ms": 5420}
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_a_seed_shaped_event_is_valid(validator):
    result = validator.validate([_event()], now=NOW)
    assert result.rejected == [] and result.valid.num_rows == 1
    row = result.valid.to_pylist()[0]
    assert row["user_id"] == USER_IDS[0] and row["item_id"] == ITEM_IDS[0]
    assert row["timestamp"] == NOW - timedelta(minutes=5)
    assert row["event_id"] == str(derive_event_id(int(USER_IDS[0]), int(ITEM_IDS[0]), "view",
                                                  NOW - timedelta(minutes=5), "abc123"))
    assert (row["device"], row["platform"], row["session_id"], row["dwell_time_ms"]) == ("mobile", "ios", "abc123", 5420)


def test_optional_fields_and_integer_ids(validator):
    payload = _event(user_id=int(USER_IDS[1]), item_id=int(ITEM_IDS[1]), context=..., dwell_time_ms=None)
    result = validator.validate([payload], now=NOW)
    assert result.rejected == []
    assert result.valid.column("user_id").to_pylist() == [USER_IDS[1]]


def test_a_given_event_id_is_kept_canonical(validator):
    eid = "6F1C0E9A-52D4-4C1E-9A7B-2F0B3E8C7D11"
    result = validator.validate([_event(event_id=eid)], now=NOW)
    assert result.valid.column("event_id").to_pylist() == [eid.lower()]


def test_timestamps_with_offsets_are_converted_to_utc(validator):
    local = (NOW - timedelta(minutes=10)).astimezone(timezone(timedelta(hours=5, minutes=30)))
    result = validator.validate([_event(timestamp=local.isoformat())], now=NOW)
    assert result.valid.column("timestamp").to_pylist() == [NOW - timedelta(minutes=10)]


CASES = [
    (b"x" * (rules.MAX_MESSAGE_BYTES + 1), Reason.TOO_LARGE),
    (b'{"user_id": "\xff"}', Reason.BAD_ENCODING),
    (b'{"user_id": ', Reason.BAD_JSON),
    (b"[1, 2]", Reason.NOT_AN_OBJECT),
    (b"42", Reason.NOT_AN_OBJECT),
    (b'"text"', Reason.NOT_AN_OBJECT),
    (_event(item_id=...), Reason.MISSING_FIELD),
    (_event(timestamp=None), Reason.MISSING_FIELD),
    (_event(user_id=1.0), Reason.WRONG_TYPE),
    (_event(event_type=["view"]), Reason.WRONG_TYPE),
    (_event(dwell_time_ms=True), Reason.WRONG_TYPE),
    (_event(user_id="1e3"), Reason.BAD_ID),
    (_event(item_id="١٢٣"), Reason.BAD_ID),
    (_event(user_id=str(2**63)), Reason.ID_OUT_OF_RANGE),
    (_event(user_id=0), Reason.ID_OUT_OF_RANGE),
    (_event(event_id="123"), Reason.BAD_EVENT_ID),
    (_event(timestamp="2026-03-01 25:00"), Reason.BAD_TIMESTAMP),
    (_event(timestamp="2026-03-01T11:55:00"), Reason.BAD_TIMESTAMP),
    (_event(timestamp=format_timestamp(NOW - timedelta(seconds=rules.MAX_EVENT_AGE_SECONDS + 1))), Reason.TOO_OLD),
    (_event(timestamp=format_timestamp(NOW + timedelta(seconds=rules.MAX_FUTURE_SKEW_SECONDS + 1))), Reason.IN_FUTURE),
    (_event(event_type="click"), Reason.BAD_EVENT_TYPE),
    (_event(dwell_time_ms=-1), Reason.BAD_DWELL),
    (_event(dwell_time_ms=rules.MAX_DWELL_MS + 1), Reason.BAD_DWELL),
    (_event(context=[]), Reason.BAD_CONTEXT),
    (_event(context={"device": 1}), Reason.BAD_CONTEXT),
    (_event(context={"platform": "beos"}), Reason.BAD_CONTEXT),
    (_event(context={"session_id": "a\x00b"}), Reason.BAD_CONTEXT),
    (_event(user_id="999999"), Reason.UNKNOWN_USER),
    (_event(item_id="999999"), Reason.UNKNOWN_ITEM),
]


@pytest.mark.parametrize(("payload", "reason"), CASES)
def test_each_reason(validator, payload, reason):
    result = validator.validate([_event(), payload], now=NOW)
    assert result.reasons(2) == [None, reason]


def test_every_dlq_reason_has_a_case():
    """Every reason a payload can earn; ``INTERNAL_ERROR`` is for bugs, injected below, and
    ``CRASHED_CONSUMER`` for bisection (tests/ingestion/test_bisect.py)."""
    assert {reason for _, reason in CASES} == \
        set(rules.DLQ_REASONS) - {Reason.INTERNAL_ERROR, Reason.CRASHED_CONSUMER} - set(rules.RECORD_ONLY_REASONS) \
        - {Reason.OUTSIDE_PARTITION_WINDOW}  # needs a window in Limits: test_the_partition_window_*


@pytest.mark.parametrize("payload", [b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000,
                                     b'{"user_id": ' * 5000 + b"1" + b"}" * 5000])
def test_nesting_too_deep_to_parse_is_bad_json(validator, payload):
    result = validator.validate([_event(), payload, _event(user_id=str(USER_IDS[1]))], now=NOW)
    assert result.reasons(3) == [None, Reason.BAD_JSON, None]


def test_an_exception_while_validating_one_message_dead_letters_only_that_one(validator, monkeypatch):
    original = Validator._check_one

    def faulty(payload, decode):
        if payload == b"boom":
            raise RuntimeError("injected")
        return original(payload, decode)

    monkeypatch.setattr(Validator, "_check_one", staticmethod(faulty))
    result = validator.validate([_event(), b"boom", _event(user_id=str(USER_IDS[1]))], now=NOW)
    assert result.reasons(3) == [None, Reason.INTERNAL_ERROR, None]
    assert result.errors == {1: "RuntimeError"}


def test_age_bounds_are_configurable_and_replay_lifts_them():
    day_old = _event(timestamp=format_timestamp(NOW - timedelta(days=1)))
    strict = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(max_age_seconds=60))
    assert strict.validate([_event()], now=NOW).reasons(1) == [Reason.TOO_OLD]
    replay = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True))
    assert replay.validate([day_old], now=NOW).reasons(1) == [None]
    skewed = _event(timestamp=format_timestamp(NOW + timedelta(seconds=30)))
    no_skew = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(max_future_seconds=0))
    assert no_skew.validate([skewed], now=NOW).reasons(1) == [Reason.IN_FUTURE]


def test_the_partition_window_refuses_days_outside_it_by_the_consumers_clock():
    """Day granularity in UTC, as ensure_activity_partitions counts; after the clock bounds (an event
    too old or too far ahead is named so), catching what --replay or a weeks-old backlog judged on
    its arrival lets through them, before Postgres refuses it."""
    windowed = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains,
                         Limits(replay=True, partition_days_back=60, partition_days_ahead=8))
    midnight = NOW.replace(hour=0, minute=0)
    days = [midnight - timedelta(days=60), midnight - timedelta(days=60, microseconds=1),
            midnight + timedelta(days=9, microseconds=-1), midnight + timedelta(days=9)]
    result = windowed.validate([_event(timestamp=format_timestamp(t)) for t in days], now=NOW)
    assert result.reasons(4) == [None, Reason.OUTSIDE_PARTITION_WINDOW, Reason.IN_FUTURE, Reason.IN_FUTURE]
    arrived = int((NOW - timedelta(days=61)).timestamp() * 1_000_000)  # a backlog, not --replay
    strict = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains,
                       Limits(partition_days_back=60, partition_days_ahead=8))
    stale = _event(timestamp=format_timestamp(NOW - timedelta(days=61, minutes=5)))
    assert strict.validate([stale, _event()], now=NOW, arrived_us=[arrived, -1]).reasons(2) == \
        [Reason.OUTSIDE_PARTITION_WINDOW, None]
    unbounded = Validator(IdIndex(USER_IDS).contains, IdIndex(ITEM_IDS).contains, Limits(replay=True))
    assert unbounded.validate([_event(timestamp=format_timestamp(days[1]))], now=NOW).reasons(1) == [None]


def test_duplicates_in_a_batch_are_kept_once(validator):
    first = _event()
    resent = json.dumps({**json.loads(first), "timestamp": (NOW - timedelta(minutes=5)).isoformat()}).encode()
    result = validator.validate([first, resent, first], now=NOW)
    assert result.reasons(3) == [None, Reason.DUPLICATE, Reason.DUPLICATE]
    assert result.valid.num_rows == 1 and result.valid_index.tolist() == [0]


def test_parse_id():
    assert parse_id("0012") == 12
    assert parse_id(rules.BIGINT_MAX) == rules.BIGINT_MAX
    assert parse_id("9" * 5000) is Reason.ID_OUT_OF_RANGE
    assert parse_id("+5") is Reason.BAD_ID


def test_classify_structure_never_raises_on_garbage():
    import random

    rng = random.Random(7)
    for _ in range(2000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        assert classify_structure(blob) in Reason


def test_agrees_with_the_defect_injector(validator):
    lines, expected = inject_defects(valid_lines(400, now=NOW), copies=2, duplicates=15, now=NOW,
                                     unknown_user_id=999_999, unknown_item_id=999_999, seed=3)
    result = validator.validate(lines, now=NOW)
    got = result.reasons(len(lines))
    mismatches = [(lines[i][:120], expected[i], got[i]) for i in range(len(lines)) if expected[i] != got[i]]
    assert mismatches == []
    assert {r for r in expected if r is not None} == \
        set(Reason) - {Reason.INTERNAL_ERROR, Reason.CRASHED_CONSUMER, Reason.OUTSIDE_PARTITION_WINDOW} \
        - set(rules.RECORD_ONLY_REASONS)
    assert result.valid.num_rows == 400


def test_defect_injector_rejects_empty_input():
    with pytest.raises(ValueError):
        inject_defects([])


def test_age_and_skew_are_judged_on_arrival_in_kafka(validator):
    """A backlog consumed hours after an outage is as fresh as when it reached Kafka."""
    later = NOW + timedelta(hours=5)  # the consumer's clock, long after the events arrived
    arrived = int((NOW - timedelta(minutes=4)).timestamp() * 1_000_000)
    fresh, old = _event(), _event(timestamp=format_timestamp(NOW - timedelta(hours=3)))
    ahead = _event(timestamp=format_timestamp(NOW + timedelta(minutes=30)))
    result = validator.validate([fresh, old, ahead], now=later, arrived_us=[arrived, arrived, arrived])
    assert result.reasons(3) == [None, Reason.TOO_OLD, Reason.IN_FUTURE]
    unknown = validator.validate([fresh], now=later, arrived_us=[-1])
    assert unknown.reasons(1) == [Reason.TOO_OLD]  # no arrival time: the consumer's clock decides
