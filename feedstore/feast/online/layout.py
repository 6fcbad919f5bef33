"""Where a row lives in Redis and for how long.

Stock Feast keeps every view of an entity in one hash and can only expire the whole hash
(``key_ttl_seconds``). Here each (entity, view) is its own hash, ``<project>:{<join_key>=<value>}:<view>``,
with fields ``_ts`` (event time, epoch µs) and one field per feature, so each view's key carries
that view's TTL; the hash tag ``{...}`` puts all views of an entity in one Redis Cluster slot.
Writes, reads and housekeeping all name keys through this module.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureView, RepoConfig
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feedstore.feast import private

TS_FIELD = b"_ts"
"""The hash field holding the row's event time (epoch µs): newer-wins compares it, reads check the TTL on it."""


# ---- keys ----------------------------------------------------------------------------------

def key_part(value: object) -> str:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str):
        return quote(value, safe="")
    return str(int(value))


def key_parts(values: list) -> list[str]:
    """``key_part`` of each value; a column of plain ``int`` s (the common id) in one ``map``."""
    if set(map(type, values)) == {int}:
        return list(map(str, values))
    return [key_part(v) for v in values]


def entity_text(join_keys: Sequence[str], values: Sequence[object]) -> str:
    """``user_id=42`` (composite keys sorted by name); strings are %-quoted so braces never appear."""
    pairs = sorted(zip(join_keys, values)) if len(join_keys) > 1 else zip(join_keys, values)
    return ",".join(f"{k}={key_part(v)}" for k, v in pairs)


def proto_value(v: ValueProto) -> object:
    kind = v.WhichOneof("val")
    if kind is None:
        raise ValueError("an entity key value is empty")
    return getattr(v, kind)


def key_prefix(project: str) -> str:
    return f"{project}:{{"


def key_suffix(view: str) -> str:
    return f"}}:{view}"


def redis_key(project: str, entity: str, view: str) -> bytes:
    """``<project>:{<entity>}:<view>``: the braces make Redis Cluster place every view of an
    entity in the same slot, and one key per view lets each carry its own expiry."""
    return f"{project}:{{{entity}}}:{view}".encode()


def entity_texts(table: pa.Table | pa.RecordBatch, join_keys: Sequence[str]) -> list[str]:
    """Entity texts for every row; the common single-integer key takes a vectorised path."""
    if len(join_keys) == 1:
        col = table.column(join_keys[0])
        if pa.types.is_integer(col.type):
            return pc.binary_join_element_wise(join_keys[0] + "=", pc.cast(col, pa.string()), "").to_pylist()
    cols = [table.column(k).to_pylist() for k in join_keys]
    return [entity_text(join_keys, row) for row in zip(*cols)]


def entity_key_text(entity_key: EntityKeyProto) -> str:
    """The entity part of a key, from Feast's ``EntityKey`` proto (its push and read APIs)."""
    return entity_text(entity_key.join_keys, [proto_value(v) for v in entity_key.entity_values])


def view_name(view: FeatureView, config: RepoConfig) -> str:
    """The view part of a key: the name Feast's own Redis store uses (versioned when enabled)."""
    return private.versioned_view_name(view, config)


def view_keys_pattern(project: str, view: str) -> str:
    """A ``SCAN MATCH`` pattern for every key of one view."""
    return f"{_glob_escape(project)}:{{*}}:{_glob_escape(view)}"


def entity_keys_pattern(project: str, join_keys: Sequence[str]) -> str:
    """A ``SCAN MATCH`` pattern for every key, of any view, of entities keyed by exactly ``join_keys``."""
    pattern = ",".join(f"{_glob_escape(k)}=*" for k in sorted(join_keys))
    return f"{_glob_escape(project)}:{{{pattern}}}:*"


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def newest_key(project: str) -> bytes:
    """``<project>:_newest``: per view, the event time (epoch µs) of the newest row ever written
    online, what the freshness metric reads (no braces: never matched by the entity patterns)."""
    return f"{project}:_newest".encode()


# ---- expiry --------------------------------------------------------------------------------

def ttl_micros(view: FeatureView) -> int:
    """0 means no TTL, as in Feast."""
    ttl = view.ttl
    return int(ttl.total_seconds() * 1_000_000) if ttl else 0


def now_micros() -> int:
    return time.time_ns() // 1000
