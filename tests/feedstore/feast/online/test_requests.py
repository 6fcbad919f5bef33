"""Malformed ``get_online_features`` requests through the SDK: each class of the HTTP server's
(tests/feedstore/feast/test_serving.py) refused with one line of our own, sync and async, and
the store still answering afterwards."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from feast.errors import FeastError, FeatureViewNotFoundException
from feast.protos.feast.types.Value_pb2 import RepeatedValue
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feedstore.feast.online.requests import JoinKeyError, RequestError, UnknownFeatureError

USER = ["user_embedding:user_embedding"]
PAIR = ["user_embedding:user_embedding", "item_embedding:item_embedding"]

MALFORMED = [  # (features, entity_rows, error class, HTTP status, the whole message)
    (USER, [], RequestError, 400, "entity_rows is empty: give at least one row of join key -> value"),
    (USER, {}, RequestError, 400, "entity_rows has no join keys: give join key -> list of values"),
    (USER, {"user_id": []}, RequestError, 400, "entity_rows has no rows: every column is empty"),
    (USER, [{}], RequestError, 400, "entity_rows[0] has no join keys"),
    (USER, [1], RequestError, 400, "entity_rows[0] must be a dict of join key -> value, got int"),
    (USER, {"user_id": "1"}, RequestError, 400, "entity_rows['user_id'] must be a list of values, got str"),
    (USER, {"user_id": np.array([1])}, RequestError, 400,
     "entity_rows['user_id'] must be a list of values, got ndarray"),
    (USER, "user_id=1", RequestError, 400, "entity_rows must be a list of rows or a dict of columns, got str"),
    (["user_embedding:nope"], [{"user_id": 1}], UnknownFeatureError, 404,
     "feature view 'user_embedding' has no feature 'nope'"),
    (["user_embedding"], [{"user_id": 1}], RequestError, 400,
     "'user_embedding' is not a feature reference (view:feature)"),
    (PAIR, {"user_id": [1, 2], "item_id": [1001]}, RequestError, 400,
     "every entity_rows column must have the same length, got user_id: 2, item_id: 1"),
    (USER, [{"user_id": 1}, {"usr_id": 2}], RequestError, 400,
     "every entity row must have the same keys: row 0 has user_id, row 1 has usr_id"),
    (USER, [{"user_id": None}], RequestError, 400, "entity_rows user_id (row 0): null is not an id"),
    (USER, {"user_id": [1, float("nan")]}, RequestError, 400, "entity_rows user_id (row 1): NaN is not an id"),
    (USER, [{"user_id": 2**70}], RequestError, 400,
     "entity_rows user_id (row 0): 1180591620717411303424 does not fit in 64 bits"),
    (USER, [{"user_id": np.uint64(2**64 - 1)}], RequestError, 400,
     "entity_rows user_id (row 0): 18446744073709551615 does not fit in 64 bits"),
    (USER, [{"user_id": True}], RequestError, 400, "entity_rows user_id (row 0): True is not an integer id"),
    (USER, [{"user_id": np.bool_(True)}], RequestError, 400, "entity_rows user_id (row 0): True is not an integer id"),
    (USER, [{"user_id": 1.5}], RequestError, 400, "entity_rows user_id (row 0): 1.5 is not an integer id"),
    (USER, [{"user_id": "abc"}], RequestError, 400, "entity_rows user_id (row 0): 'abc' is not an integer id"),
    (USER, [{"user_id": [1]}], RequestError, 400, "entity_rows user_id (row 0): [1] is not an integer id"),
    (USER, {"user_id": RepeatedValue(val=[ValueProto()])}, RequestError, 400,
     "entity_rows user_id (row 0): an empty Value proto is not an id"),
    (USER, [{"usr_id": 1}], JoinKeyError, 400, "unknown join key usr_id: the requested features are keyed by user_id"),
    (PAIR, [{"user_id": 1}], JoinKeyError, 400, "missing join key item_id for the requested features"),
]


@pytest.mark.parametrize(("features", "rows", "kind", "status", "message"), MALFORMED,
                         ids=[m[4][:48] for m in MALFORMED])
def test_a_malformed_request_through_the_sdk_gets_one_line_of_ours(fs, online_tables, features, rows, kind, status,
                                                                   message):
    """Feast's own answers were an IndexError, "pop from an empty set", "All entity rows must have
    the same columns", "Value out of range", and True or 1.5 read as user 1."""
    with pytest.raises(kind) as caught:
        fs.get_online_features(features=features, entity_rows=rows)
    assert str(caught.value) == message
    assert isinstance(caught.value, FeastError) and caught.value.http_status_code() == status
    assert isinstance(caught.value, KeyError if kind is not RequestError else ValueError)
    with pytest.raises(kind) as caught:
        asyncio.run(fs.get_online_features_async(features=features, entity_rows=rows))
    assert str(caught.value) == message
    assert fs.get_online_features(features=USER, entity_rows=[{"user_id": 1}]).to_dict()["user_id"] == [1]


def test_an_unknown_view_stays_feasts_own_one_line_error(fs, online_tables):
    with pytest.raises(FeatureViewNotFoundException) as caught:
        fs.get_online_features(features=["no_such_view:x"], entity_rows=[{"user_id": 1}])
    assert str(caught.value) == "Feature view no_such_view does not exist in project feed_ranking"
    assert caught.value.http_status_code() == 404


@pytest.mark.parametrize("rows", [
    [{"user_id": 1}, {"user_id": 2}],
    {"user_id": [1, 2]},
    {"user_id": (1, 2)},
    {"user_id": [np.int64(1), np.int32(2)]},
    {"user_id": ["1", "2"]},  # a decimal string, as Feast converts it (JSON clients)
    {"user_id": RepeatedValue(val=[ValueProto(int64_val=1), ValueProto(int64_val=2)])},
])
def test_every_well_formed_shape_is_still_answered(fs, online_tables, rows):
    expected = fs.get_online_features(features=USER, entity_rows=[{"user_id": 1}, {"user_id": 2}]).to_dict()
    assert expected["user_embedding"][0] is not None
    assert fs.get_online_features(features=USER, entity_rows=rows).to_dict() == expected
