"""A fault-injecting TCP proxy for tests: put one in front of a store, point the client at it,
and switch what the network does while the client runs.

Modes (switchable at any time, from any thread):

- ``pass_through()``: forward both ways; bytes held by an earlier stall are released.
- ``refuse()``: every open connection is reset and new ones are reset as soon as they arrive,
  as a crashed server (or a closed port behind a load balancer) looks to a client.
- ``stall()``: connections are accepted and bytes taken but nothing is forwarded, no RST, no
  FIN: a hung server or a black-holed network. ``stall(before=pattern)`` forwards until the
  client sends ``pattern`` and holds that request and everything after it.
- ``hold_reply(after=pattern)``: forwards the request that contains ``pattern`` and holds the
  server's reply to it: the server has acted, the client does not know (yet).
- ``reset_after_request(times, request, reply)``: a lost acknowledgement. The request reaches
  the server, the server's reply (``reply``, default its first byte) is swallowed and the client
  connection reset; the server side is drained until quiet, so everything the client sent is
  acted on. After ``times`` resets the proxy passes again.

Patterns are bytes or compiled ``re`` patterns over the byte stream of one connection
(``POSTGRES_COMMIT``, ``REDIS_SCRIPT``, ``S3_PUT``, ``HTTP_FINAL_STATUS`` below). A client
that goes away while bytes of its are held loses them: held requests never reach the server.
Everything runs on one selector thread, so a mode switch is seen by every connection at once.
"""

from __future__ import annotations

import queue
import re
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Pattern = bytes | re.Pattern[bytes]

# A Postgres simple-query message "COMMIT" (psycopg's ``transaction()`` commits with it).
POSTGRES_COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"
# A Lua script call in RESP (redis-py's registered scripts run as EVALSHA).
REDIS_SCRIPT = re.compile(rb"\$(?:7\r\nEVALSHA|4\r\nEVAL|5\r\nFCALL)\r\n", re.IGNORECASE)
# An S3 object (or part) upload, and the final status line of an HTTP reply (not "100 Continue").
S3_PUT = re.compile(rb"(?:^|\n)PUT /")
HTTP_FINAL_STATUS = re.compile(rb"HTTP/1\.[01] [2-5]\d\d ")

PASS, REFUSE, STALL, STALL_BEFORE, HOLD_REPLY, RESET = "pass", "refuse", "stall", "stall_before", "hold_reply", "reset"
_TAIL = 1024
_TICK = 0.02  # how often the loop takes commands (a mode switch waits at most this long)


def find(pattern: Pattern | None, tail: bytes, data: bytes) -> int | None:
    """Where in ``data`` a match of ``pattern`` over ``tail + data`` starts (0 when it starts in the
    tail), counting only matches that end inside ``data``; None pattern matches at 0."""
    if pattern is None:
        return 0 if data else None
    window = tail + data
    if isinstance(pattern, bytes):
        start = window.find(pattern, max(0, len(tail) - len(pattern) + 1))
        return None if start < 0 else max(0, start - len(tail))
    for m in pattern.finditer(window):
        if m.end() > len(tail):
            return max(0, m.start() - len(tail))
    return None


def _reset(sock: socket.socket | None) -> None:
    """Close with an RST (linger 0), not a FIN."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


@dataclass(eq=False)
class _Conn:
    client: socket.socket
    upstream: socket.socket
    to_up: bytearray = field(default_factory=bytearray)
    to_client: bytearray = field(default_factory=bytearray)
    held_up: bytearray = field(default_factory=bytearray)
    held_down: bytearray = field(default_factory=bytearray)
    up_tail: bytes = b""
    down_tail: bytes = b""
    holding_request: bool = False  # stall(before=…) matched: hold the client's bytes from there on
    armed: bool = False  # hold_reply / reset matched a request: the reply is the server's next bytes
    draining_until: float | None = None  # after a reset: the server side is read and dropped until then
    quiet_at: float = 0.0
    closed: bool = False


class FaultProxy:
    """``FaultProxy(("127.0.0.1", 5433)).start()`` listens on a free loopback port (``port``)."""

    def __init__(self, upstream: tuple[str, int], name: str = "", settle_seconds: float = 0.3) -> None:
        self.upstream = upstream
        self.name = name or f"{upstream[0]}:{upstream[1]}"
        self.settle_seconds = settle_seconds
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._conns: set[_Conn] = set()
        self._thread = threading.Thread(target=self._loop, name=f"fault-proxy {self.name}", daemon=True)
        self._closing = False
        self._mode = PASS
        self._pattern: Pattern | None = None
        self._reply: Pattern | None = None
        self._resets_left = 0
        self.resets = 0
        self.accepted = 0
        self.tripped = threading.Event()
        """Set when the armed fault took effect: a request held, a reply held, or a reset done."""

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._thread.start()
        return self

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown)
        self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def live(self) -> int:
        """Open client connections."""
        return len(self._conns)

    def wait_closed(self, timeout: float = 10) -> bool:
        """Until no client connection is open (after its process died, say)."""
        deadline = time.monotonic() + timeout
        while self._conns and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._conns

    # -- modes -----------------------------------------------------------------------------------

    def pass_through(self) -> None:
        self._switch(PASS)

    def refuse(self) -> None:
        self._switch(REFUSE)

    def stall(self, before: Pattern | None = None) -> None:
        self._switch(STALL if before is None else STALL_BEFORE, pattern=before)

    def hold_reply(self, after: Pattern | None = None) -> None:
        self._switch(HOLD_REPLY, pattern=after)

    def reset_after_request(self, times: int = 1, request: Pattern | None = None, reply: Pattern | None = None) -> None:
        if times < 1:
            raise ValueError("times must be at least 1")
        self._switch(RESET, pattern=request, reply=reply, times=times)

    def _switch(self, mode: str, pattern: Pattern | None = None, reply: Pattern | None = None, times: int = 0) -> None:
        def apply() -> None:
            self._mode, self._pattern, self._reply, self._resets_left = mode, pattern, reply, times
            self.tripped.clear()
            for conn in list(self._conns):
                if mode == REFUSE:
                    self._abort(conn)
                    continue
                conn.armed = False
                if mode == PASS:
                    conn.holding_request = False
                    conn.to_up += conn.held_up
                    conn.to_client += conn.held_down
                    conn.held_up.clear()
                    conn.held_down.clear()
                    self._interest(conn)

        self._call(apply)

    def _call(self, fn: Callable[[], None]) -> None:
        """Runs ``fn`` on the proxy's thread and waits for it: a switch is in force on return."""
        if not self._thread.is_alive():
            fn()
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._commands.put(run)  # the loop looks every _TICK seconds
        if not done.wait(10):
            raise RuntimeError(f"fault proxy {self.name} did not answer")

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closing:
            for key, events in self._sel.select(self._timeout()):
                if key.fileobj is self._listener:
                    self._accept()
                else:
                    conn, side = key.data
                    if events & selectors.EVENT_READ and not conn.closed:
                        self._read(conn, side)
                    if events & selectors.EVENT_WRITE and not conn.closed:
                        self._write(conn, side)
            self._drain_commands()
            self._timers()

    def _timeout(self) -> float:
        deadlines = [c.quiet_at for c in self._conns if c.draining_until is not None]
        return max(0.0, min(min(deadlines) - time.monotonic(), _TICK)) if deadlines else _TICK

    def _drain_commands(self) -> None:
        while not self._closing:
            try:
                self._commands.get_nowait()()
            except queue.Empty:
                return

    def _shutdown(self) -> None:
        self._closing = True
        for conn in list(self._conns):
            self._abort(conn)
        self._sel.unregister(self._listener)
        self._listener.close()
        self._sel.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        if self._mode == REFUSE:
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(client, upstream)
        self._conns.add(conn)
        self._sel.register(client, selectors.EVENT_READ, (conn, "client"))
        self._sel.register(upstream, selectors.EVENT_READ, (conn, "upstream"))

    def _read(self, conn: _Conn, side: str) -> None:
        if side == "client" and conn.draining_until is not None:
            return
        sock = conn.client if side == "client" else conn.upstream
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._eof(conn, side)
        elif side == "client":
            self._from_client(conn, data)
        else:
            self._from_upstream(conn, data)
        if not conn.closed:
            self._interest(conn)

    def _from_client(self, conn: _Conn, data: bytes) -> None:
        mode, tail = self._mode, conn.up_tail
        conn.up_tail = (tail + data)[-_TAIL:]
        if mode == STALL or conn.holding_request:
            conn.held_up += data
            return
        if mode == STALL_BEFORE and (at := find(self._pattern, tail, data)) is not None:
            conn.to_up += data[:at]
            conn.held_up += data[at:]
            conn.holding_request = True
            self.tripped.set()
            return
        if mode in (HOLD_REPLY, RESET) and not conn.armed and find(self._pattern, tail, data) is not None:
            if mode == HOLD_REPLY or self._resets_left > 0:
                conn.armed = True
                conn.down_tail = b""
                if mode == RESET:
                    self._resets_left -= 1
        conn.to_up += data

    def _from_upstream(self, conn: _Conn, data: bytes) -> None:
        if conn.draining_until is not None:
            conn.quiet_at = min(time.monotonic() + self.settle_seconds, conn.draining_until)
            return
        mode = self._mode
        if mode == STALL or (mode == HOLD_REPLY and conn.armed):
            conn.held_down += data
            if mode == HOLD_REPLY:
                self.tripped.set()
            return
        if conn.armed and mode == RESET:
            tail, conn.down_tail = conn.down_tail, (conn.down_tail + data)[-_TAIL:]
            at = find(self._reply, tail, data)
            if at is None:
                conn.to_client += data
                return
            self._lose_reply(conn, bytes(conn.to_client) + data[:at])
            return
        conn.to_client += data

    def _lose_reply(self, conn: _Conn, before_reply: bytes) -> None:
        """The reply reached us, not the client: reset the client, keep draining the server."""
        self._sel.unregister(conn.client)
        try:
            conn.client.setblocking(True)
            conn.client.settimeout(1)
            conn.client.sendall(before_reply)
        except OSError:
            pass
        _reset(conn.client)
        conn.to_client.clear()
        now = time.monotonic()
        conn.draining_until, conn.quiet_at = now + 5, now + self.settle_seconds
        self.resets += 1
        self.tripped.set()
        if self._resets_left <= 0:
            self._mode, self._pattern, self._reply = PASS, None, None

    def _eof(self, conn: _Conn, side: str) -> None:
        """A client gone drops what it had held (it never reaches the server); otherwise what is
        pending goes on before the other side is closed too."""
        if side == "client":
            if conn.held_up or conn.holding_request:
                self._abort(conn)
                return
            self._flush(conn.upstream, conn.to_up)
        elif conn.draining_until is None:
            self._flush(conn.client, conn.to_client)
        self._close(conn)

    @staticmethod
    def _flush(sock: socket.socket, pending: bytearray) -> None:
        if not pending:
            return
        try:
            sock.setblocking(True)
            sock.settimeout(2)
            sock.sendall(pending)
        except OSError:
            pass
        pending.clear()

    def _write(self, conn: _Conn, side: str) -> None:
        if side == "client" and conn.draining_until is not None:
            return
        sock, pending = (conn.client, conn.to_client) if side == "client" else (conn.upstream, conn.to_up)
        try:
            sent = sock.send(pending)
        except BlockingIOError:
            return
        except OSError:
            self._abort(conn)
            return
        del pending[:sent]
        self._interest(conn)

    def _interest(self, conn: _Conn) -> None:
        """Always read both sides (held bytes are kept here, not in the kernel, so that a client's
        going away is seen at once); write a side with bytes pending."""
        if conn.closed:
            return
        if conn.draining_until is None:
            self._sel.modify(conn.client, self._events(len(conn.to_client)), (conn, "client"))
        self._sel.modify(conn.upstream, self._events(len(conn.to_up)), (conn, "upstream"))

    @staticmethod
    def _events(pending_here: int) -> int:
        return selectors.EVENT_READ | (selectors.EVENT_WRITE if pending_here else 0)

    def _timers(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self._conns if c.draining_until is not None and now >= c.quiet_at]:
            self._close(conn)

    def _abort(self, conn: _Conn) -> None:
        self._close(conn, rst=True)

    def _close(self, conn: _Conn, rst: bool = False) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.discard(conn)
        for sock in (conn.client, conn.upstream):
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            if rst:
                _reset(sock)
            else:
                sock.close()
