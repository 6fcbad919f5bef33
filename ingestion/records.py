"""Catalog and profile records (the seed's item and user shapes): raw payloads or row dicts in,
valid rows as Arrow and reason codes out, for the ``item-catalog`` and ``user-profiles`` topics
and ``feedstore load`` alike.

Pure, like the event validator: each record is decoded with msgspec into a typed struct, its
value rules are checked against the open vocabularies (``feedstore.contract.vocabularies``), and
the survivors become one Arrow table. A record's *version* is its ``updated_at``, or its
``created_at`` when it has none: the upsert keeps the newest version and ignores older ones.
Refusals carry a reason (the DLQ ``reason`` header) and a one-line detail naming the field
(the ``error`` header, the rejects file's ``detail``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feedstore.contract import rules
from feedstore.contract.rules import Reason
from feedstore.contract.vocabularies import Vocabularies, current
from feedstore.logs import get_logger
from ingestion.validation import Result, parse_id

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
TS = pa.timestamp("us", tz="UTC")
log = get_logger("feedstore.ingest")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_MIN_CREATED = datetime.fromisoformat(rules.MIN_CREATED_AT)


class Item(msgspec.Struct):
    item_id: str | int
    creator_id: str | int
    media_type: str
    created_at: AwareDatetime
    category: str | None = None
    tags: list[str] | None = None
    updated_at: AwareDatetime | None = None
    content_embedding: list[float] | None = None
    metadata: dict[str, Any] | None = None


class Demographics(msgspec.Struct):
    age_range: str | None = None
    country: str | None = None
    language: str | None = None


class Preferences(msgspec.Struct):
    categories: list[str] | None = None
    following: list[str | int] | None = None


class User(msgspec.Struct):
    user_id: str | int
    created_at: AwareDatetime
    demographics: Demographics | None = None
    preferences: Preferences | None = None
    updated_at: AwareDatetime | None = None


ITEM_ROWS = pa.schema([
    pa.field("item_id", pa.int64()), pa.field("creator_id", pa.int64()), pa.field("category", pa.string()),
    pa.field("tags", pa.list_(pa.string())), pa.field("media_type", pa.string()),
    pa.field("created_at", TS), pa.field("updated_at", TS), pa.field("version", TS),
    pa.field("metadata", pa.string()), pa.field("content_embedding", pa.list_(pa.float32())),
])
"""A valid item; ``version`` = ``updated_at`` or ``created_at``, ``metadata`` as JSON text."""
USER_ROWS = pa.schema([
    pa.field("user_id", pa.int64()), pa.field("created_at", TS), pa.field("updated_at", TS),
    pa.field("version", TS), pa.field("age_range", pa.string()), pa.field("country", pa.string()),
    pa.field("language", pa.string()), pa.field("preferred_categories", pa.list_(pa.string())),
    pa.field("following", pa.list_(pa.int64())), pa.field("demographics", pa.string()),
    pa.field("preferences", pa.string()),
])


class Refused(Exception):
    """One record's refusal: the reason code and a one-line detail naming the field."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // _US


def _check_time(name: str, ts: datetime | None, latest_us: int) -> int | None:
    if ts is None:
        return None
    if ts < _MIN_CREATED:
        raise Refused(Reason.BAD_RECORD, f"{name} {ts.isoformat()} is before {rules.MIN_CREATED_AT}")
    us = _micros(ts)
    if us > latest_us:
        raise Refused(Reason.BAD_RECORD, f"{name} {ts.isoformat()} is in the future")
    return us


def _id(name: str, value: str | int) -> int:
    parsed = parse_id(value)
    if type(parsed) is Reason:
        raise Refused(parsed, f"{name} {str(value)[:40]!r} is not an id in [1, 2^63-1]")
    return parsed


def _in(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        plural = {"category": "categories", "country": "countries"}.get(name, f"{name}s")
        raise Refused(Reason.BAD_VOCABULARY, f"{name} {value[:60]!r} is not in vocabularies.toml {plural}")
    return value


def _categories(values: list[str] | None, vocab: Vocabularies) -> list[str]:
    for value in values or ():
        _in("category", value, vocab.categories)
    return list(values or ())


def _tags(tags: list[str] | None) -> list[str] | None:
    if tags is None:
        return None
    if len(tags) > rules.MAX_TAGS:
        raise Refused(Reason.BAD_RECORD, f"{len(tags)} tags, more than {rules.MAX_TAGS}")
    for tag in tags:
        if not tag or len(tag) > rules.MAX_TAG_LENGTH or not tag.isprintable():
            raise Refused(Reason.BAD_RECORD, f"tag {tag[:40]!r} is empty, longer than {rules.MAX_TAG_LENGTH} "
                                             "or not printable")
    return tags


def _embedding(values: list[float] | None) -> list[float] | None:
    if values is None:
        return None
    if len(values) != rules.EMBEDDING_DIM:
        raise Refused(Reason.BAD_EMBEDDING, f"content_embedding has {len(values)} values, not {rules.EMBEDDING_DIM}")
    if not all(math.isfinite(v) for v in values):
        raise Refused(Reason.BAD_EMBEDDING, "content_embedding holds NaN or infinity")
    return values


def _versions(created: datetime, updated: datetime | None, latest_us: int) -> tuple[int, int | None, int]:
    created_us = _check_time("created_at", created, latest_us)
    updated_us = _check_time("updated_at", updated, latest_us)
    if updated_us is not None and updated_us < created_us:
        raise Refused(Reason.BAD_RECORD, "updated_at is before created_at")
    return created_us, updated_us, updated_us if updated_us is not None else created_us


def item_row(item: Item, vocab: Vocabularies, latest_us: int) -> tuple:
    created, updated, version = _versions(item.created_at, item.updated_at, latest_us)
    return (_id("item_id", item.item_id), _id("creator_id", item.creator_id), _in("category", item.category,
            vocab.categories), _tags(item.tags), _in("media_type", item.media_type, vocab.media_types),
            created, updated, version, json.dumps(item.metadata) if item.metadata is not None else None,
            _embedding(item.content_embedding))


def user_row(user: User, vocab: Vocabularies, latest_us: int) -> tuple:
    created, updated, version = _versions(user.created_at, user.updated_at, latest_us)
    demo, prefs = user.demographics or Demographics(), user.preferences or Preferences()
    following = [_id("following", f) for f in prefs.following or ()]
    if len(following) > rules.MAX_FOLLOWING:
        raise Refused(Reason.BAD_RECORD, f"follows {len(following)} users, more than {rules.MAX_FOLLOWING}")
    age_range = _in("age_range", demo.age_range, vocab.age_ranges)
    country = _in("country", demo.country, vocab.countries)
    language = _in("language", demo.language, vocab.languages)
    categories = _categories(prefs.categories, vocab)
    following = list(dict.fromkeys(following))
    return (_id("user_id", user.user_id), created, updated, version, age_range, country, language, categories,
            following, json.dumps(msgspec.to_builtins(demo)),
            json.dumps({"categories": categories, "following": [str(f) for f in following]}))


@dataclass(frozen=True)
class Kind:
    """One record kind: its wire struct, row builder, Arrow rows and required fields."""

    name: str
    struct: type[msgspec.Struct]
    row: Callable[[Any, Vocabularies, int], tuple]
    schema: pa.Schema
    key: str
    required: tuple[str, ...]


ITEMS = Kind("items", Item, item_row, ITEM_ROWS, "item_id", rules.REQUIRED_ITEM_FIELDS)
USERS = Kind("users", User, user_row, USER_ROWS, "user_id", rules.REQUIRED_USER_FIELDS)
KINDS = {k.name: k for k in (ITEMS, USERS)}

_PATH = re.compile(r"at `\$\.?([A-Za-z_]*)")
_TIME_FIELDS = {"created_at", "updated_at"}


def _refusal(exc: msgspec.ValidationError, kind: Kind) -> Refused:
    """Why msgspec refused a record, as a reason and the field its message names."""
    text = str(exc)
    match = _PATH.search(text)
    name = match.group(1) if match else ""
    if text.startswith("Expected `object`") and not match:
        return Refused(Reason.NOT_AN_OBJECT, text)
    if text.startswith("Object missing required field"):
        return Refused(Reason.MISSING_FIELD, text)
    if "null" in text and name in kind.required:
        return Refused(Reason.MISSING_FIELD, text)
    if name in _TIME_FIELDS:
        return Refused(Reason.BAD_TIMESTAMP, text)
    if name == "content_embedding":
        return Refused(Reason.BAD_EMBEDDING, text)
    return Refused(Reason.WRONG_TYPE, text)


def _decode_error(payload: bytes) -> Refused:
    try:
        obj = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return Refused(Reason.BAD_ENCODING, "not UTF-8")
    except (ValueError, RecursionError) as exc:
        return Refused(Reason.BAD_JSON, f"not JSON: {str(exc)[:120]}")
    if not isinstance(obj, dict):
        return Refused(Reason.NOT_AN_OBJECT, f"a JSON {type(obj).__name__}, not an object")
    return Refused(Reason.BAD_JSON, "JSON that msgspec refuses (NaN, huge numbers)")


class RecordValidator:
    """Validates a batch of one kind; ``vocab`` defaults to the configured vocabularies."""

    def __init__(self, kind: Kind, vocab: Vocabularies | None = None, *,
                 future_seconds: int = rules.MAX_RECORD_FUTURE_SKEW_SECONDS) -> None:
        self.kind = kind
        self.vocab = vocab or current()
        self.future_seconds = future_seconds
        self._decoder = msgspec.json.Decoder(kind.struct)

    def validate(self, payloads: Sequence[bytes | None], arrived_us: np.ndarray | None = None,
                 now: datetime | None = None) -> Result:
        """JSON payloads (a topic's messages, JSON lines)."""
        return self._validate(payloads, self._from_json, arrived_us, now)

    def validate_objects(self, objects: Sequence[dict], now: datetime | None = None) -> Result:
        """Decoded rows (Parquet, CSV): the same rules through ``msgspec.convert``."""
        return self._validate(objects, self._from_object, None, now)

    def _from_json(self, payload: bytes | None) -> Any:
        if payload is None:
            raise Refused(Reason.BAD_JSON, "empty message")
        if len(payload) > rules.MAX_MESSAGE_BYTES:
            raise Refused(Reason.TOO_LARGE, f"{len(payload)} bytes, more than {rules.MAX_MESSAGE_BYTES}")
        try:
            return self._decoder.decode(payload)
        except msgspec.ValidationError as exc:
            raise _refusal(exc, self.kind) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            raise _decode_error(payload) from None

    def _from_object(self, obj: dict) -> Any:
        try:
            return msgspec.convert(obj, self.kind.struct, strict=False)
        except msgspec.ValidationError as exc:
            raise _refusal(exc, self.kind) from None

    def _validate(self, records: Sequence, decode: Callable[[Any], Any], arrived_us, now) -> Result:
        now_us = _micros(now or datetime.now(timezone.utc))
        skew = self.future_seconds * 1_000_000
        rows, index, rejected, errors = [], [], [], {}
        for i, record in enumerate(records):
            latest = (int(arrived_us[i]) if arrived_us is not None and arrived_us[i] > 0 else now_us) + skew
            try:
                rows.append(self.kind.row(decode(record), self.vocab, latest))
                index.append(i)
            except Refused as exc:
                rejected.append((i, exc.reason))
                errors[i] = exc.detail[:300]
            except Exception as exc:  # noqa: BLE001 - no record may stop ingestion
                log.warning("record_validation_raised", kind=self.kind.name, error=type(exc).__name__)
                rejected.append((i, Reason.INTERNAL_ERROR))
                errors[i] = type(exc).__name__
        return Result(to_table(rows, self.kind.schema), np.asarray(index, dtype=np.int64), rejected, [], errors)


def to_table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    if not rows:
        return schema.empty_table()
    cols = list(zip(*rows))
    arrays = [pa.array(c, type=pa.int64()).cast(f.type) if f.type == TS else pa.array(c, type=f.type)
              for c, f in zip(cols, schema)]
    return pa.Table.from_arrays(arrays, schema=schema)


# ---- the columnar path (Parquet): whole columns checked at once, refusals by the row path --------

_MIN_US = _micros(_MIN_CREATED)


def _ids_ok(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray] | None:
    """An integer id column as int64 and its in-range mask; None for other types (row path)."""
    if not pa.types.is_integer(col.type):
        return None
    values = pc.fill_null(pc.cast(col, pa.int64(), safe=False), 0).to_numpy()
    return values, (values >= rules.MIN_ID) & pc.is_valid(col).to_numpy(zero_copy_only=False)


def _micros_of(col: pa.ChunkedArray) -> np.ndarray | None:
    if not pa.types.is_timestamp(col.type) or col.type.tz is None:
        return None
    return pc.fill_null(pc.cast(pc.cast(col, pa.timestamp("us", tz="UTC")), pa.int64()), -(2**62)).to_numpy()


def _in_vocab(col: pa.ChunkedArray, values: tuple[str, ...], nullable: bool) -> np.ndarray:
    ok = pc.fill_null(pc.is_in(col, value_set=pa.array(values)), nullable)
    return ok.to_numpy(zero_copy_only=False)


def _list_rows_ok(col: pa.ChunkedArray, element_ok: pa.Array, n: int) -> np.ndarray:
    """Per row: every element of the list passes ``element_ok`` (aligned with the flattened values)."""
    arr = col.combine_chunks()
    parents = pc.list_parent_indices(arr).to_numpy()
    bad = np.zeros(n, dtype=bool)
    bad[parents[~element_ok.to_numpy(zero_copy_only=False)]] = True
    return ~bad


def columnar_items(table: pa.Table, vocab: Vocabularies, latest_us: int) -> tuple[pa.Table, np.ndarray] | None:
    """The rows of ``table`` that pass every item rule, as ITEM_ROWS, and their positions; None when
    the columns are not of the types this path reads (then every row takes the row path)."""
    n, names = table.num_rows, set(table.column_names)
    if not set(rules.REQUIRED_ITEM_FIELDS) <= names or "metadata" in names:
        return None
    ids, creators = _ids_ok(table["item_id"]), _ids_ok(table["creator_id"])
    created = _micros_of(table["created_at"])
    if ids is None or creators is None or created is None or not pa.types.is_string(table["media_type"].type):
        return None
    ok = ids[1] & creators[1] & (created >= _MIN_US) & (created <= latest_us)
    ok &= _in_vocab(table["media_type"], vocab.media_types, False)
    category = table["category"] if "category" in names else pa.chunked_array([pa.nulls(n, pa.string())])
    if not pa.types.is_string(category.type):
        return None
    ok &= _in_vocab(category, vocab.categories, True)
    updated = _micros_of(table["updated_at"]) if "updated_at" in names else np.full(n, -(2**62))
    if updated is None:
        return None
    has_updated = updated > -(2**62)
    ok &= ~has_updated | ((updated >= created) & (updated >= _MIN_US) & (updated <= latest_us))
    tags = table["tags"] if "tags" in names else pa.chunked_array([pa.nulls(n, pa.list_(pa.string()))])
    if not (pa.types.is_list(tags.type) and pa.types.is_string(tags.type.value_type)):
        return None
    flat = pc.list_flatten(tags)
    lengths = pc.utf8_length(flat)
    ok &= pc.fill_null(pc.less_equal(pc.list_value_length(tags), rules.MAX_TAGS), True).to_numpy(zero_copy_only=False)
    ok &= _list_rows_ok(tags, pc.fill_null(pc.and_(pc.and_(pc.greater(lengths, 0),
                                                           pc.less_equal(lengths, rules.MAX_TAG_LENGTH)),
                                                   pc.utf8_is_printable(flat)), False), n)
    embedding = table["content_embedding"] if "content_embedding" in names \
        else pa.chunked_array([pa.nulls(n, pa.list_(pa.float32()))])
    if not (pa.types.is_list(embedding.type) and pa.types.is_floating(embedding.type.value_type)):
        return None
    values = pc.list_flatten(embedding)
    ok &= pc.fill_null(pc.equal(pc.list_value_length(embedding), rules.EMBEDDING_DIM), True) \
        .to_numpy(zero_copy_only=False)
    ok &= _list_rows_ok(embedding, pc.fill_null(pc.is_finite(values), False), n)
    keep = pa.array(ok)
    version = np.where(has_updated, updated, created)[ok]
    out = pa.table({
        "item_id": pa.array(ids[0][ok]), "creator_id": pa.array(creators[0][ok]),
        "category": category.filter(keep), "tags": tags.filter(keep), "media_type": table["media_type"].filter(keep),
        "created_at": pa.array(created[ok]).cast(TS),
        "updated_at": pa.array(updated[ok], mask=~has_updated[ok]).cast(TS), "version": pa.array(version).cast(TS),
        "metadata": pa.nulls(int(ok.sum()), pa.string()),
        "content_embedding": embedding.filter(keep).cast(pa.list_(pa.float32())),
    })
    return out.cast(ITEM_ROWS), np.flatnonzero(ok)


def validate_table(validator: RecordValidator, table: pa.Table, now: datetime | None = None) -> Result:
    """Like ``validate_objects`` for an Arrow table: items whose columns this path reads are checked
    column-wise, and only the rows it does not pass go through the row path (for their reasons)."""
    now_us = _micros(now or datetime.now(timezone.utc))
    fast = columnar_items(table, validator.vocab, now_us + validator.future_seconds * 1_000_000) \
        if validator.kind is ITEMS else None
    if fast is None:
        return validator.validate_objects(table.to_pylist(), now)
    valid, index = fast
    rest = np.setdiff1d(np.arange(table.num_rows), index)
    if rest.size == 0:
        return Result(valid, index.astype(np.int64))
    slow = validator.validate_objects(table.take(pa.array(rest)).to_pylist(), now)
    valid = pa.concat_tables([valid, slow.valid])
    positions = np.concatenate([index, rest[slow.valid_index]]).astype(np.int64)
    order = np.argsort(positions, kind="stable")
    rejected = [(int(rest[i]), r) for i, r in slow.rejected]
    errors = {int(rest[i]): e for i, e in slow.errors.items()}
    return Result(valid.take(pa.array(order)), positions[order], sorted(rejected), [], errors)
