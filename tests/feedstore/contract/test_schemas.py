"""The JSON Schema files in the repo are the contract's (rebuilt from the rules and vocabularies),
and the validators agree with them: every sample that a schema accepts is stored, every one it
refuses is dead-lettered."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone

import jsonschema
import numpy as np
import pytest

from feedstore.contract import schemas
from ingestion.records import ITEMS, USERS, RecordValidator
from ingestion.validation import Limits, Validator

pytestmark = pytest.mark.pure
NOW = datetime.now(timezone.utc).replace(microsecond=0)
STAMP = NOW.isoformat().replace("+00:00", "Z")

EVENT = {"user_id": "12345", "item_id": "67890", "event_type": "view", "timestamp": STAMP,
         "context": {"device": "mobile", "platform": "ios", "session_id": "abc123"}, "dwell_time_ms": 5420}
ITEM = {"item_id": "67890", "creator_id": "54321", "category": "tech", "tags": ["ai", "python"],
        "created_at": "2025-11-15T08:00:00Z", "media_type": "video", "content_embedding": [0.1] * 32}
USER = {"user_id": "12345", "created_at": "2024-01-15T00:00:00Z",
        "demographics": {"age_range": "25-34", "country": "US", "language": "en"},
        "preferences": {"categories": ["tech", "sports"], "following": ["54321", "98765"]}}


def changed(base: dict, path: str, value) -> dict:
    out = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[leaf]
    else:
        node[leaf] = value
    return out


EVENT_CASES = [EVENT, changed(EVENT, "user_id", 42), changed(EVENT, "event_type", "click"),
               changed(EVENT, "user_id", "12a"), changed(EVENT, "item_id", KeyError), changed(EVENT, "context", None),
               changed(EVENT, "context.device", "watch"), changed(EVENT, "dwell_time_ms", -1),
               changed(EVENT, "dwell_time_ms", 1.5), changed(EVENT, "timestamp", "2025-11-15 10:30"),
               changed(EVENT, "event_id", "not-a-uuid"), changed(EVENT, "event_id", "5b3e0c1e-9d1c-4f5e-8a55-3c0d7c2b9a10"),
               changed(EVENT, "context.session_id", "x" * 129), changed(EVENT, "user_id", 0)]
ITEM_CASES = [ITEM, changed(ITEM, "item_id", 7), changed(ITEM, "category", "anime"), changed(ITEM, "category", None),
              changed(ITEM, "media_type", "gif"), changed(ITEM, "created_at", KeyError),
              changed(ITEM, "created_at", "1969-07-20T20:17:00Z"),
              changed(ITEM, "content_embedding", [0.1] * 31), changed(ITEM, "content_embedding", ["x"] * 32),
              changed(ITEM, "tags", ["ok"] * 65), changed(ITEM, "tags", [""]), changed(ITEM, "tags", "ai"),
              changed(ITEM, "updated_at", "2025-11-16T00:00:00Z"), changed(ITEM, "metadata", {"source": "x"}),
              changed(ITEM, "metadata", [1]), changed(ITEM, "creator_id", "-3")]
USER_CASES = [USER, changed(USER, "demographics.country", "KR"), changed(USER, "demographics.age_range", "99+"),
              changed(USER, "preferences.categories", ["anime"]), changed(USER, "preferences.following", ["x"]),
              changed(USER, "preferences.following", [1, 2]), changed(USER, "demographics", None),
              changed(USER, "created_at", "yesterday"), changed(USER, "user_id", KeyError),
              changed(USER, "preferences", {"categories": None, "following": None})]


def schema_accepts(name: str, record: dict) -> bool:
    validator = jsonschema.Draft202012Validator(schemas.build()[name])
    return validator.is_valid(record)


def test_the_schema_files_are_the_contracts():
    for name, schema in schemas.build().items():
        path = schemas.DIRECTORY / f"{name}.schema.json"
        assert path.read_text() == schemas.text(schema), f"{path} is stale: python -m feedstore.contract.schemas"
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_event_validator_agrees_with_the_event_schema():
    known = lambda ids: np.ones(len(ids), dtype=bool)  # noqa: E731
    validator = Validator(known, known, Limits())
    payloads = [json.dumps(c).encode() for c in EVENT_CASES]
    result = validator.validate(payloads, now=NOW)
    refused = {i for i, _ in result.rejected}
    for i, case in enumerate(EVENT_CASES):
        assert schema_accepts("event", case) == (i not in refused), (case, result.rejected)


@pytest.mark.parametrize("kind, name, cases", [(ITEMS, "item", ITEM_CASES), (USERS, "user", USER_CASES)])
def test_record_validators_agree_with_their_schemas(kind, name, cases):
    result = RecordValidator(kind).validate([json.dumps(c).encode() for c in cases], now=NOW)
    refused = {i for i, _ in result.rejected}
    for i, case in enumerate(cases):
        assert schema_accepts(name, case) == (i not in refused), (case, result.rejected, result.errors)
    assert len(refused) >= len(cases) // 2, "too few refusals to say anything"


def test_time_bounds_no_schema_states_are_checked_on_arrival():
    """The schemas give the bounds in words (a date range a schema cannot express)."""
    cases = [changed(ITEM, "created_at", "1800-01-01T00:00:00Z"), changed(ITEM, "created_at", "2999-01-01T00:00:00Z"),
             changed(ITEM, "updated_at", "2025-01-01T00:00:00Z"), changed(ITEM, "created_at", "1900-01-01T00:00:00Z")]
    result = RecordValidator(ITEMS).validate([json.dumps(c).encode() for c in cases], now=NOW)
    assert [(i, str(r)) for i, r in result.rejected] == [(0, "bad_record"), (1, "bad_record"), (2, "bad_record")]
    assert "before created_at" in result.errors[2]
