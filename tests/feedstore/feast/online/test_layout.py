"""Keys name the project, the entity and the view, readably and without stray braces."""

from __future__ import annotations

import pyarrow as pa
import pytest
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from feedstore.feast.online import layout

pytestmark = pytest.mark.pure


def test_entity_keys_are_readable_and_brace_free():
    assert layout.redis_key("p", "user_id=42", "v") == b"p:{user_id=42}:v"
    assert layout.entity_text(["b", "a"], ["x}{y", 1]) == "a=1,b=x%7D%7By"
    table = pa.table({"item_id": pa.array([5, -7], pa.int64())})
    assert layout.entity_texts(table, ["item_id"]) == ["item_id=5", "item_id=-7"]
    key = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=42)])
    assert layout.entity_text(key.join_keys, [layout.proto_value(v) for v in key.entity_values]) == "user_id=42"
