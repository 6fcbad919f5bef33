"""The columnar encoders produce exactly Feast's ``ValueProto`` bytes."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest
from feast.protos.feast.types.Value_pb2 import Value
from feast.utils import _columns_to_proto_values
from feast.value_type import ValueType as V

from feedstore.feast.online import codec

pytestmark = pytest.mark.pure

RNG = np.random.default_rng(1)
CASES = {
    "int64": (V.INT64, pa.array([1, None, -5, 0, 2**40, -(2**40), 127, 128, 16383, 16384], pa.int64())),
    "int64_extremes": (V.INT64, pa.array([2**63 - 1, -(2**63), 0, 1], pa.int64())),
    "int32": (V.INT32, pa.array([1, -1, 0, 2**31 - 1], pa.int32())),
    "double": (V.DOUBLE, pa.array([1.5, None, -2.0, 0.0, 1e300], pa.float64())),
    "float": (V.FLOAT, pa.array([1.5, -2.0, 0.0], pa.float32())),
    "bool": (V.BOOL, pa.array([True, False, None, True])),
    "string": (V.STRING, pa.array(["a", None, "", "é", "x" * 300], pa.string())),
    "float_list": (V.FLOAT_LIST, pa.array([[1.0, 2.0], None, [], [0.5], [1.0] * 40], pa.list_(pa.float32()))),
    "embedding": (V.FLOAT_LIST, pa.array(RNG.random((50, 32), dtype=np.float32).tolist(), pa.list_(pa.float32()))),
    "double_list": (V.DOUBLE_LIST, pa.array([[1.0], [], None, [2.5, -1.0]], pa.list_(pa.float64()))),
    "string_list": (V.STRING_LIST, pa.array([["a", "b"], None, [], ["c" * 200]], pa.list_(pa.string()))),
    "int64_list": (V.INT64_LIST, pa.array([[1, -2], None, [], [300, 2**62]], pa.list_(pa.int64()))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_encode_column_equals_feast(name):
    value_type, arr = CASES[name]
    ref = _columns_to_proto_values(pa.table({"c": arr}), [("c", value_type)], allow_missing=False)["c"]
    assert codec.encode_column(arr, value_type) == [v.SerializeToString() for v in ref]


def test_encode_column_on_chunked_input():
    arr = pa.chunked_array([pa.array([1, 2]), pa.array([3])])
    assert [Value.FromString(b).int64_val for b in codec.encode_column(arr, V.INT64)] == [1, 2, 3]


def test_timestamp_cells_equal_protobuf():
    from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse

    dts = [datetime(2026, 3, 1, 12, 0, 1, 123456, tzinfo=timezone.utc), datetime(1970, 1, 1, tzinfo=timezone.utc),
           datetime(2026, 3, 1, tzinfo=timezone.utc), datetime(1969, 12, 31, 23, 59, 59, 5, tzinfo=timezone.utc)]
    us = [codec.datetime_to_micros(dt) for dt in dts]
    expected = GetOnlineFeaturesResponse.FeatureVector()
    for dt in dts:
        expected.event_timestamps.add().FromDatetime(dt)
    assert b"".join(codec.timestamp_cells(us)) == expected.SerializeToString()
    assert b"".join(codec.timestamp_cells(us * 20)) == expected.SerializeToString() * 20   # the vectorised path
    assert [codec.micros_to_datetime(u) for u in us] == dts
