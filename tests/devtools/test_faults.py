"""The fault proxy against a line server of the test's own: each mode does to a client what it
says, and the server sees exactly what a real one would."""

from __future__ import annotations

import re
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from devtools.faults import HTTP_FINAL_STATUS, POSTGRES_COMMIT, REDIS_SCRIPT, S3_PUT, FaultProxy, find

pytestmark = pytest.mark.pure


class LineServer(socketserver.ThreadingTCPServer):
    """Answers each line ``x`` with ``ok x``; lines starting with ``slow`` answer after 0.2 s,
    lines ``2step`` first with an interim ``wait`` line (as HTTP's 100 Continue)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            self._answer(self.server)  # type: ignore[arg-type]
        except ConnectionError:
            pass  # the proxy reset us: what some tests are about

    def _answer(self, server: LineServer) -> None:
        for line in self.rfile:
            with server.lock:
                server.received.append(line.rstrip(b"\n"))
            if line.startswith(b"slow"):
                time.sleep(0.2)
            if line.startswith(b"2step"):
                self.wfile.write(b"wait\n")
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(b"ok " + line)
            self.wfile.flush()


@pytest.fixture()
def server() -> Iterator[LineServer]:
    srv = LineServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture()
def proxy(server: LineServer) -> Iterator[FaultProxy]:
    with FaultProxy(server.server_address[:2], name="line") as p:
        yield p


def _client(proxy: FaultProxy, timeout: float = 2) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def _ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\n")
    return _line(sock)


def _line(sock: socket.socket) -> bytes:
    out = b""
    while not out.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out.rstrip(b"\n")


def _until(probe, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.02)
    return False


def test_pass_forwards_both_ways(server, proxy):
    with _client(proxy) as c:
        assert _ask(c, b"hello") == b"ok hello"
        big = b"x" * 300_000
        assert _ask(c, big) == b"ok " + big
    assert server.received == [b"hello", big]
    assert proxy.mode == "pass"


def test_refuse_resets_open_and_new_connections_until_passing_again(server, proxy):
    c = _client(proxy)
    assert _ask(c, b"before") == b"ok before"
    proxy.refuse()
    with pytest.raises((ConnectionError, OSError)):
        _ask(c, b"after")
    c.close()
    with pytest.raises((ConnectionResetError, ConnectionError)):
        with _client(proxy) as fresh:  # reset at connect or at the first read
            _ask(fresh, b"refused")
    assert server.received == [b"before"]
    proxy.pass_through()
    with _client(proxy) as c2:
        assert _ask(c2, b"back") == b"ok back"


def test_stall_holds_bytes_without_closing_and_releases_them_on_pass(server, proxy):
    with _client(proxy, timeout=0.5) as c:
        assert _ask(c, b"one") == b"ok one"
        proxy.stall()
        c.sendall(b"two\n")
        with pytest.raises(TimeoutError):
            c.recv(1)  # no reply, and no RST/FIN either (that would return or raise otherwise)
        assert server.received == [b"one"]
        proxy.pass_through()
        c.settimeout(2)
        assert _line(c) == b"ok two"
    assert server.received == [b"one", b"two"]


def test_stall_holds_new_connections_too(server, proxy):
    proxy.stall()
    with _client(proxy, timeout=0.5) as c:
        c.sendall(b"held\n")
        with pytest.raises(TimeoutError):
            c.recv(1)
        assert server.received == []
        proxy.pass_through()
        c.settimeout(2)
        assert _line(c) == b"ok held"


def test_stall_before_a_pattern_forwards_up_to_it_and_drops_it_if_the_client_dies(server, proxy):
    proxy.stall(before=b"COMMIT")
    c = _client(proxy, timeout=0.5)
    assert _ask(c, b"BEGIN") == b"ok BEGIN"
    c.sendall(b"COMMIT\n")
    assert proxy.tripped.wait(2)
    with pytest.raises(TimeoutError):
        c.recv(1)
    c.close()  # the client dies with its request held
    assert proxy.wait_closed(5)
    proxy.pass_through()
    time.sleep(0.2)
    assert server.received == [b"BEGIN"], "a dead client's held request reached the server"


def test_hold_reply_lets_the_server_act_and_keeps_the_answer(server, proxy):
    proxy.hold_reply(after=b"COMMIT")
    with _client(proxy, timeout=0.5) as c:
        assert _ask(c, b"BEGIN") == b"ok BEGIN"
        c.sendall(b"COMMIT\n")
        assert proxy.tripped.wait(2)
        assert server.received == [b"BEGIN", b"COMMIT"]
        with pytest.raises(TimeoutError):
            c.recv(1)
        proxy.pass_through()
        c.settimeout(2)
        assert _line(c) == b"ok COMMIT"


def test_reset_after_request_loses_the_reply_a_chosen_number_of_times(server, proxy):
    proxy.reset_after_request(times=2, request=b"COMMIT")
    outcomes = []
    for k in range(4):
        with _client(proxy) as c:
            assert _ask(c, f"BEGIN {k}".encode()) == f"ok BEGIN {k}".encode()
            try:
                outcomes.append(_ask(c, f"slow COMMIT {k}".encode()))
            except (ConnectionError, OSError) as exc:
                outcomes.append(type(exc).__name__)
    assert outcomes[:2] == ["ConnectionResetError", "ConnectionResetError"]
    assert outcomes[2:] == [b"ok slow COMMIT 2", b"ok slow COMMIT 3"]
    assert proxy.resets == 2 and proxy.mode == "pass"
    assert [x for x in server.received if b"COMMIT" in x] == [f"slow COMMIT {k}".encode() for k in range(4)], \
        "every request whose reply was lost must have reached the server"


def test_reset_waits_for_the_final_reply_not_an_interim_one(server, proxy):
    proxy.reset_after_request(request=b"2step", reply=re.compile(rb"ok "))
    with _client(proxy) as c:
        c.sendall(b"2step put\n")
        assert _line(c) == b"wait"
        with pytest.raises(ConnectionResetError):
            _line(c)
    assert server.received == [b"2step put"]


def test_reset_without_a_pattern_hits_the_next_request_on_any_connection(server, proxy):
    proxy.reset_after_request(times=1)
    with _client(proxy) as c, pytest.raises(ConnectionResetError):
        _ask(c, b"anything")
    assert _until(lambda: server.received == [b"anything"])
    with _client(proxy) as c:
        assert _ask(c, b"next") == b"ok next"


def test_a_pattern_split_across_reads_is_found():
    assert find(b"COMMIT", b"...COM", b"MIT...") == 0
    assert find(b"COMMIT", b"COMMIT", b"xyz") is None, "a match wholly in the tail was seen before"
    assert find(b"COMMIT", b"", b"abCOMMIT") == 2
    assert find(None, b"", b"a") == 0 and find(None, b"", b"") is None
    assert find(S3_PUT, b"", b"PUT /bucket/key HTTP/1.1\r\n") == 0
    assert find(S3_PUT, b"GET / HTTP/1.1\r\n\r\n", b"PUT /b/k HTTP/1.1") == 0
    assert find(S3_PUT, b"", b"GET /PUT /") is None
    assert find(HTTP_FINAL_STATUS, b"", b"HTTP/1.1 100 Continue\r\n\r\n") is None
    assert find(HTTP_FINAL_STATUS, b"", b"HTTP/1.1 200 OK\r\n") == 0
    assert find(REDIS_SCRIPT, b"", b"*5\r\n$7\r\nEVALSHA\r\n$40\r\n") == 4
    assert find(POSTGRES_COMMIT, b"", b"Q\x00\x00\x00\x0bCOMMIT\x00") == 0
    assert find(POSTGRES_COMMIT, b"", b"Q\x00\x00\x00\x3bCREATE TEMP TABLE t () ON COMMIT DELETE ROWS\x00") is None


def test_close_resets_what_is_open(server):
    proxy = FaultProxy(server.server_address[:2]).start()
    c = _client(proxy)
    assert _ask(c, b"x") == b"ok x"
    proxy.close()
    with pytest.raises((ConnectionError, OSError)):
        _ask(c, b"y")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
