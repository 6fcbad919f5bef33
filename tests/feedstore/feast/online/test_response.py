"""The bulk cell conversion gives exactly what Feast's per-value converter gives."""

from __future__ import annotations

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType

from feedstore.feast.online.response import _expand, decode_cells

pytestmark = pytest.mark.pure

CASES = {
    ValueType.INT64: [0, -1, 2**63 - 1, -(2**63), 300],
    ValueType.INT32: [0, -5, 2**31 - 1, 7],
    ValueType.BOOL: [True, False, True],
    ValueType.DOUBLE: [0.0, -1.5, 1e308, 0.1],
    ValueType.FLOAT: [0.0, 1.25, -3.5e38],
    ValueType.STRING: ["", "abc", "ünï©ødé", "x" * 300],
    ValueType.BYTES: [b"", b"\x00\xff", b"y" * 200],
    ValueType.FLOAT_LIST: [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0], [-1.0, 0.5, 9.0]],
    ValueType.DOUBLE_LIST: [[0.1, 0.2], [1e300, -2.0]],
    ValueType.STRING_LIST: [["a", "b"], [], ["ü"]],
    ValueType.INT64_LIST: [[1, -2, 3], [], [2**40]],
}
RAGGED = {ValueType.FLOAT_LIST: [[0.5], [], [1.0, 2.0, 3.0]], ValueType.DOUBLE_LIST: [[], [2.5, 1.0]]}


def _cells(values, value_type):
    protos = python_values_to_proto_values(values, value_type)
    return [p.SerializeToString() or None for p in protos]


@pytest.mark.parametrize("value_type, values", [*CASES.items(), *RAGGED.items()])
def test_bulk_decoding_equals_feast(value_type, values):
    cells = _cells(values, value_type)
    cells.insert(1, None)                                   # a missing value in the middle
    expected = [None if c is None else feast_value_type_to_python_type(Value.FromString(c), value_type)
                for c in cells]
    got = decode_cells(cells, value_type)
    assert got == expected
    assert [type(v) for v in got] == [type(v) for v in expected]


def test_cells_of_another_type_fall_back_to_feast():
    cells = _cells([1.5, 2.5], ValueType.DOUBLE)
    assert decode_cells(cells, ValueType.INT64) == [1.5, 2.5]   # declared INT64, stored DOUBLE
    assert decode_cells([None, None], ValueType.INT64) == [None, None]


def test_uuid_hint_gives_uuid_objects_as_feast_does():
    import uuid

    u = uuid.uuid4()
    cells = [Value(string_val=str(u)).SerializeToString()]
    assert decode_cells(cells, ValueType.UUID) == [u]


def test_repeated_entities_never_share_a_list():
    values = decode_cells(_cells([[1.0, 2.0]], ValueType.FLOAT_LIST), ValueType.FLOAT_LIST)
    rows = _expand(values, [0, 0, 0])
    rows[0].append(9.0)
    assert rows[1] == [1.0, 2.0] and rows[2] == [1.0, 2.0]
    assert _expand([5, 6], [1, 0, 1]) == [6, 5, 6]
    assert np.float32(0.1).item() == decode_cells(_cells([[0.1]], ValueType.FLOAT_LIST), ValueType.FLOAT_LIST)[0][0]
