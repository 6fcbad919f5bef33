"""Bytes on the wire: protobuf varints, and Redis commands sent as one pre-packed RESP buffer.

The store writes and reads ``ValueProto`` bytes itself (``codec``, ``response``), so it frames
protobuf fields by hand: every length and integer is a base-128 varint, written here once.

redis-py packs each pipelined command in Python (several µs per command); for a
materialization of millions of rows, or a read of 1,500 keys in a 20 ms budget, that packing
is the bottleneck. Here a whole batch is packed with a handful of ``bytes.join`` calls, sent on
one pooled connection, and the replies are parsed by redis-py's own (hiredis) reader. A Redis
Cluster client has no single connection: there the same commands go through its pipeline.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from redis import Redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser
from redis.exceptions import ResponseError

# ---- protobuf varints ----------------------------------------------------------------------

def varint(value: int) -> bytes:
    """Protobuf base-128 varint; negatives as 64-bit two's complement, as protobuf does."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [varint(i) for i in range(16384)]


def len_prefix(n: int) -> bytes:
    """The varint length in front of a length-delimited field (small ones precomputed: one
    per cell of every response)."""
    return _SMALL_VARINTS[n] if n < 16384 else varint(n)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        b = data[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if b < 0x80:
            return value, pos
        shift += 7


def varints(values: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Varints of an int64 array as one buffer plus row offsets (vectorised, no per-value Python)."""
    u = values.astype(np.int64, copy=False).view(np.uint64)
    n = len(u)
    if n == 0:
        return b"", np.zeros(1, dtype=np.int64)
    shifts = np.arange(10, dtype=np.uint64) * np.uint64(7)
    groups = (u[:, None] >> shifts[None, :]) & np.uint64(0x7F)
    bitlen = np.zeros(n, dtype=np.int64)
    nz = u != 0
    bitlen[nz] = np.floor(np.log2(u[nz].astype(np.float64))).astype(np.int64) + 1
    # float log2 may round up near powers of two; fix with an exact check
    big = bitlen > 0
    too_high = big & ((u >> np.clip(bitlen - 1, 0, 63).astype(np.uint64)) == 0)
    bitlen[too_high] -= 1
    nbytes = np.maximum(1, (bitlen + 6) // 7)
    cols = np.arange(10)[None, :]
    cont = cols < (nbytes[:, None] - 1)
    mat = (groups | (cont.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    keep = cols < nbytes[:, None]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(nbytes, out=offsets[1:])
    return mat[keep].tobytes(), offsets


def split(buf: bytes, offsets: np.ndarray) -> list[bytes]:
    """The pieces of ``buf`` between consecutive ``offsets`` (as ``varints`` returns them)."""
    o = offsets.tolist()
    return [buf[o[i]:o[i + 1]] for i in range(len(o) - 1)]


# ---- RESP ----------------------------------------------------------------------------------

_BULK = [b"$%d\r\n" % n for n in range(16384)]
CRLF = b"\r\n"


def bulk(arg: bytes) -> bytes:
    """One RESP bulk string (the header of common sizes precomputed)."""
    n = len(arg)
    return (_BULK[n] if n < 16384 else b"$%d\r\n" % n) + arg + CRLF


def packs(client) -> bool:
    """Whether the client has one connection pool to send a packed buffer on (not a cluster)."""
    return isinstance(client, Redis)


def execute_packed(client: Redis, payload: bytes, count: int) -> list:
    """Send ``count`` packed commands and return their replies in order; an error reply is
    returned as a ``ResponseError`` so the connection stays in step with the server."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([payload], check_health=False)
        return _read_replies(conn, count)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _read_replies(conn, count: int) -> list:
    """``count`` replies; with the hiredis parser its reader is drained directly (redis-py's
    ``read_response`` costs ~4 µs of Python per reply, more than hiredis' parsing of it)."""
    parser = conn._parser
    reader = getattr(parser, "_reader", None)
    if not isinstance(parser, _HiredisParser) or reader is None or parser._next_response is not NOT_ENOUGH_DATA:
        replies: list = []
        for _ in range(count):
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    replies = []
    gets, append, refill = reader.gets, replies.append, parser.read_from_socket
    while len(replies) < count:
        reply = gets()
        if reply is NOT_ENOUGH_DATA:
            refill()
        else:
            append(reply)  # an error reply arrives as a ResponseError instance
    return replies


def execute_commands(client, commands: Sequence[Sequence[bytes]]) -> list:
    """The same through redis-py's pipeline, for clients without a single connection (Cluster)."""
    with client.pipeline(transaction=False) as pipe:
        for name, *args in commands:  # a cluster routes by the command's name, which it wants as str
            pipe.execute_command(name.decode() if isinstance(name, bytes) else name, *args)
        return pipe.execute(raise_on_error=False)


def raise_first_error(replies: list) -> None:
    if set(map(type, replies)) <= {list, int, bytes}:  # the common case, checked in C
        return
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply


def hmget(client, groups: Iterable[tuple[Sequence[bytes], Sequence[bytes]]]) -> list:
    """``HMGET key *fields`` for every key of every ``(fields, keys)`` group, in one round trip;
    the replies in order (one list of values per key); an error reply raises."""
    return [reply for replies in hmget_groups(client, groups) for reply in replies]


def hmget_groups(client, groups: Iterable[tuple[Sequence[bytes], Sequence[bytes]]]) -> Iterator[list]:
    """The same round trip, each group's replies yielded as soon as they have all arrived: Redis
    answers 1,500 HMGETs over milliseconds, and the caller's work on one group overlaps the
    server's on the next. An error reply raises; a caller that stops early drops the connection
    (its unread replies would answer the next command)."""
    groups = list(groups)
    if not packs(client):
        replies = execute_commands(client, [[b"HMGET", k, *fields] for fields, keys in groups for k in keys])
        raise_first_error(replies)
        start = 0
        for _, keys in groups:
            yield replies[start:start + len(keys)]
            start += len(keys)
        return
    parts: list[bytes] = []
    for fields, keys in groups:
        head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(fields) + 2)
        tail = b"".join(map(bulk, fields))
        parts.extend([b"%b$%d\r\n%b\r\n%b" % (head, len(k), k, tail) for k in keys])
    pool = client.connection_pool
    conn = pool.get_connection()
    in_step = False
    try:
        conn.send_packed_command([b"".join(parts)], check_health=False)
        for i, (_, keys) in enumerate(groups):
            replies = _read_replies(conn, len(keys))
            in_step = i == len(groups) - 1  # every reply read: the connection can serve the next call,
            raise_first_error(replies)      # even when the caller closes this generator without resuming it
            yield replies
    finally:
        if not in_step:
            conn.disconnect()
        pool.release(conn)


def evalsha_rows(client, sha: bytes, keys: Sequence[bytes], shared: Sequence[bytes],
                 rows: Sequence[Sequence[bytes]], rows_per_call: int) -> list:
    """A script over rows: each call takes up to ``rows_per_call`` keys as ``KEYS`` and, as
    ``ARGV``, the ``shared`` arguments then, per key, that row's value of each column of ``rows``
    (columns as long as ``keys``). One key per call on a cluster, where one call's keys must share
    a slot. Replies in call order; an error reply is returned as an exception."""
    if packs(client):
        shared_part = b"".join(map(bulk, shared))
        packed_rows = list(map(b"".join, zip(*(list(map(bulk, column)) for column in rows))))
        key_cells = list(map(bulk, keys))
        parts = []
        for start in range(0, len(keys), rows_per_call):
            n = len(key_cells[start:start + rows_per_call])
            parts.append(b"*%d\r\n$7\r\nEVALSHA\r\n" % (3 + n + len(shared) + n * len(rows))
                         + bulk(sha) + bulk(b"%d" % n))
            parts.extend(key_cells[start:start + n])
            parts.append(shared_part)
            parts.extend(packed_rows[start:start + n])
        return execute_packed(client, b"".join(parts), -(-len(keys) // rows_per_call))
    commands = [[b"EVALSHA", sha, b"1", k, *shared, *(column[i] for column in rows)] for i, k in enumerate(keys)]
    return execute_commands(client, commands)
