"""Protobuf varints as protobuf writes them, and the RESP packing of HMGET and EVALSHA against
redis-py's own packing and a real Redis."""

from __future__ import annotations

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import Value
from redis.exceptions import ResponseError

from feedstore.feast.online import wire


def test_varints_match_protobuf():
    values = np.array([0, 1, 127, 128, 255, 2**14 - 1, 2**14, 2**21, 2**35 + 3, 2**63 - 1, -1, -(2**63)], np.int64)
    buf, offsets = wire.varints(values)
    assert wire.split(buf, offsets) == [wire.varint(int(v)) for v in values]
    assert [Value.FromString(b"\x20" + b).int64_val for b in wire.split(buf, offsets)] == values.tolist()


class _Unpacked:
    """A client without one connection pool (as a Redis Cluster is): the pipeline path."""

    def __init__(self, client) -> None:
        self.pipeline = client.pipeline


def test_hmget_packs_every_group_in_one_round_trip(redis_client):
    redis_client.hset(b"wire:a", mapping={b"x": b"1", b"y": b"2"})
    redis_client.hset(b"wire:b", mapping={b"x": b"3"})
    groups = [([b"x", b"y"], [b"wire:a", b"wire:missing"]), ([b"x"], [b"wire:b", b"wire:a"])]
    expected = [[b"1", b"2"], [None, None], [b"3"], [b"1"]]
    assert wire.hmget(redis_client, groups) == expected
    assert wire.hmget(_Unpacked(redis_client), groups) == expected
    assert wire.hmget(redis_client, []) == []


def test_hmget_raises_an_error_reply_and_the_connection_stays_usable(redis_client):

    redis_client.set(b"wire:string", b"v")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        wire.hmget(redis_client, [([b"x"], [b"wire:string"])])
    assert redis_client.ping()
    assert wire.hmget(redis_client, [([b"x"], [b"wire:nothing"])]) == [[None]]


ECHO = b"local out = {} for _, k in ipairs(KEYS) do out[#out + 1] = k end out[#out + 1] = '|' " \
       b"for _, a in ipairs(ARGV) do out[#out + 1] = a end return out"


def test_evalsha_rows_gives_each_call_its_keys_then_the_shared_then_its_rows(redis_client):
    sha = redis_client.script_load(ECHO).encode()
    keys = [b"wire:{1}", b"wire:{2}", b"wire:{3}"]
    rows = [[b"t1", b"t2", b"t3"], [b"v1", b"v2", b"v3"]]
    packed = wire.evalsha_rows(redis_client, sha, keys, [b"2", b"name"], rows, rows_per_call=2)
    assert packed == [[b"wire:{1}", b"wire:{2}", b"|", b"2", b"name", b"t1", b"v1", b"t2", b"v2"],
                      [b"wire:{3}", b"|", b"2", b"name", b"t3", b"v3"]]
    one_each = wire.evalsha_rows(_Unpacked(redis_client), sha, keys, [b"2", b"name"], rows, rows_per_call=2)
    assert one_each == [[k, b"|", b"2", b"name", t, v] for k, t, v in zip(keys, *rows)]


def test_redis_py_internals_the_reader_relies_on(redis_client):
    """``_read_replies`` drains hiredis' reader directly; a redis-py upgrade that moves these fails here."""
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser

    assert NOT_ENOUGH_DATA is not None and callable(_HiredisParser.read_from_socket)
    pool = redis_client.connection_pool
    conn = pool.get_connection()
    try:
        assert isinstance(conn._parser, _HiredisParser), type(conn._parser)
        assert hasattr(conn._parser, "_reader") and hasattr(conn._parser, "_next_response")
        assert callable(conn._parser._reader.gets)
    finally:
        pool.release(conn)
