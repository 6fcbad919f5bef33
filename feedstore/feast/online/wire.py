"""Pipelines sent as one pre-packed RESP buffer.

redis-py packs each pipelined command in Python (several µs per command); for a
materialization of millions of rows, or a read of 1,500 keys in a 20 ms budget, that packing
is the bottleneck. Here a whole batch is packed with a handful of ``bytes.join`` calls, sent on
one pooled connection, and the replies are parsed by redis-py's own (hiredis) reader.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser
from redis.exceptions import ResponseError

_BULK = [b"$%d\r\n" % n for n in range(16384)]
CRLF = b"\r\n"


def bulk(arg: bytes) -> bytes:
    n = len(arg)
    return (_BULK[n] if n < 16384 else b"$%d\r\n" % n) + arg + CRLF


def bulk_header(n: int) -> bytes:
    return _BULK[n] if n < 16384 else b"$%d\r\n" % n


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(bulk(a) for a in args)


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
        for args in commands:
            pipe.execute_command(*args)
        return pipe.execute(raise_on_error=False)
