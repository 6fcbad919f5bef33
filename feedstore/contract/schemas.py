"""The JSON Schema of each message (event, item, user), built from the rules and the open
vocabularies so that it cannot drift from them. The files under ``schemas/`` are what users
read and validate their producers with; ``python -m feedstore.contract.schemas`` rewrites them
after an edit of ``vocabularies.toml`` (a test fails while they are out of date).

The schemas state the shape and the value rules; what no schema can say is checked on arrival
only: an event's age and skew against its arrival in Kafka, and whether its user and item exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from feedstore.contract import rules
from feedstore.contract.vocabularies import Vocabularies, current

DIRECTORY = Path(__file__).with_name("schemas")
DRAFT = "https://json-schema.org/draft/2020-12/schema"
TIMESTAMP = {"type": "string", "format": "date-time",
             "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$",
             "description": "RFC 3339 with a zone, e.g. 2025-11-15T10:30:00Z"}
ID = {"description": "A positive 64-bit id, as a digit string (the seed's form) or an integer",
      "oneOf": [{"type": "string", "pattern": "^0*[1-9][0-9]{0,17}$"},
                {"type": "integer", "minimum": rules.MIN_ID, "maximum": rules.BIGINT_MAX}]}


def _enum(values: tuple[str, ...], what: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values), "description": f"one of vocabularies.toml {what}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _schema(name: str, title: str, description: str, properties: dict, required: tuple[str, ...]) -> dict:
    return {"$schema": DRAFT, "$id": f"https://feedstore.local/schemas/{name}.schema.json", "title": title,
            "description": description, "type": "object", "required": list(required), "properties": properties}


def event(v: Vocabularies) -> dict:
    return _schema("event", "User activity event", "A message on the user-activity topic (key: user_id).", {
        "user_id": ID, "item_id": ID, "event_type": {"type": "string", "enum": list(rules.EVENT_TYPES)},
        "timestamp": {**TIMESTAMP, "description": "When it happened; at most "
                      f"{rules.MAX_EVENT_AGE_SECONDS} s before and {rules.MAX_FUTURE_SKEW_SECONDS} s after its "
                      "arrival in Kafka (older with `feedstore ingest --replay`)"},
        "context": _nullable({"type": "object", "properties": {
            "device": _nullable(_enum(v.devices, "devices")),
            "platform": _nullable(_enum(v.platforms, "platforms")),
            "session_id": _nullable({"type": "string", "maxLength": rules.MAX_SESSION_ID_LENGTH})}}),
        "dwell_time_ms": _nullable({"type": "integer", "minimum": 0, "maximum": rules.MAX_DWELL_MS}),
        "event_id": _nullable({"type": "string", "format": "uuid", "pattern": "^[0-9a-fA-F-]{32,36}$",
                               "description": "Optional; derived from the event's content when absent"}),
    }, rules.REQUIRED_EVENT_FIELDS)


def _time(what: str) -> dict:
    return {**TIMESTAMP, "description": f"{what}; from {rules.MIN_CREATED_AT} to its arrival "
            f"(+{rules.MAX_RECORD_FUTURE_SKEW_SECONDS} s)"}


def item(v: Vocabularies) -> dict:
    return _schema("item", "Catalog item", "A message on the item-catalog topic (key: item_id), or a row of "
                   "`feedstore load items`. The newest version (updated_at, else created_at) wins.", {
        "item_id": ID, "creator_id": ID, "media_type": _enum(v.media_types, "media_types"),
        "created_at": _time("When the item was created"),
        "updated_at": _nullable(_time("When this version became valid; not before created_at")),
        "category": _nullable(_enum(v.categories, "categories")),
        "tags": _nullable({"type": "array", "maxItems": rules.MAX_TAGS,
                           "items": {"type": "string", "minLength": 1, "maxLength": rules.MAX_TAG_LENGTH}}),
        "content_embedding": _nullable({"type": "array", "minItems": rules.EMBEDDING_DIM,
                                        "maxItems": rules.EMBEDDING_DIM, "items": {"type": "number"},
                                        "description": f"{rules.EMBEDDING_DIM} finite numbers, any scale (served "
                                                       "scaled to unit length); valid from updated_at/created_at"}),
        "metadata": _nullable({"type": "object"}),
    }, rules.REQUIRED_ITEM_FIELDS)


def user(v: Vocabularies) -> dict:
    return _schema("user", "User profile", "A message on the user-profiles topic (key: user_id), or a row of "
                   "`feedstore load users`. The newest version wins; its following list replaces the old one.", {
        "user_id": ID, "created_at": _time("When the account was created"),
        "updated_at": _nullable(_time("When this version became valid; not before created_at")),
        "demographics": _nullable({"type": "object", "properties": {
            "age_range": _nullable(_enum(v.age_ranges, "age_ranges")),
            "country": _nullable(_enum(v.countries, "countries")),
            "language": _nullable(_enum(v.languages, "languages"))}}),
        "preferences": _nullable({"type": "object", "properties": {
            "categories": _nullable({"type": "array", "items": _enum(v.categories, "categories")}),
            "following": _nullable({"type": "array", "maxItems": rules.MAX_FOLLOWING, "items": ID})}}),
    }, rules.REQUIRED_USER_FIELDS)


BUILDERS = {"event": event, "item": item, "user": user}


def build(vocab: Vocabularies | None = None) -> dict[str, dict]:
    v = vocab or current()
    return {name: fn(v) for name, fn in BUILDERS.items()}


def text(schema: dict) -> str:
    return json.dumps(schema, indent=2) + "\n"


def write(directory: Path = DIRECTORY) -> list[Path]:
    directory.mkdir(exist_ok=True)
    out = []
    for name, schema in build().items():
        path = directory / f"{name}.schema.json"
        path.write_text(text(schema))
        out.append(path)
    return out


if __name__ == "__main__":
    for p in write():
        print(p)
