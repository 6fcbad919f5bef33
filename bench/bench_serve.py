"""Serving under concurrency: ``feedstore serve --workers W`` beside ``feast serve --workers W``.

  .venv/bin/python bench/bench_serve.py                          # W = 1 and 2, 1/4/16 clients, 3 reps
  .venv/bin/python bench/bench_serve.py --seconds 2 --reps 1     # quick

Closed-loop keep-alive clients (each sends its next request when the previous answer is in)
POST /get-online-features for the ``ranking`` service, 1 user × ``--items-per-request`` items.
Same data, namespace and Redis as bench_feast.py (its setup is reused, not copied): ours reads
the bench Redis db 0, stock Feast db 1, both materialised from the same files. Both servers run
with their defaults apart from the worker count and, for stock, ``--feast-max-requests`` (0:
gunicorn recycles no worker; see that option for why its default 1000 could not be measured;
keep-alive 30 s; a dropped connection is reopened and counted).

The clients are one asyncio (uvloop) process with a minimal HTTP/1.1 client, not one process per
client: on two cores, 16 client processes would compete with the servers for the CPU. Its own CPU
time per measurement is recorded (``client_cpu``: cores used), so how much of the machine the
load generator took is in the results. Each (server, W) pair starts a fresh server per
repetition; repetitions interleave servers and the figures are medians over repetitions.
Prints a table and writes bench/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_feast  # noqa: E402 - the shared namespace, data and online materialisation

RESULTS = ROOT / "bench" / "results" / "serve.json"
SERVERS = ("feedstore", "feast")
PORTS = {"feedstore": 16577, "feast": 16576}


@contextmanager
def namespace(console) -> Iterator[None]:
    """Ours in a sandbox of the running stack (``devtools.sandbox``: its own database, migrated,
    with the ``serve`` component's least-privilege logins, a leased Redis database and bucket),
    stock Feast's online store in database 1 of bench_feast's own Redis; one registry for both."""
    import redis

    from devtools.sandbox import sandbox

    with console.status("preparing namespace…"), sandbox("bench-serve"):
        stock = f"redis://127.0.0.1:{bench_feast.BENCH_REDIS_PORT}/1"
        os.environ["BENCH_STOCK_REDIS_URL"] = stock
        redis.Redis.from_url(stock).flushdb()
        yield


# ---- servers ----------------------------------------------------------------------------------

def server_command(server: str, workers: int, feast_max_requests: int) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if server == "feedstore":
        return [str(bin_dir / "feedstore"), "serve", "--port", str(PORTS[server]), "--workers", str(workers)]
    return [str(bin_dir / "feast"), "-c", str(bench_feast.stock_repo_dir()), "serve", "-p", str(PORTS[server]),
            "--no-access-log", "--workers", str(workers), "--max-requests", str(feast_max_requests)]


def _ready(server: str, workers: int, log: Path) -> bool:
    """Ours binds each worker's socket once it is warmed up: ready when all have said so
    (gunicorn loads Feast's app before forking, so its workers are ready with /health)."""
    if server == "feedstore" and log.read_text(errors="replace").count('"event": "serve_started"') < workers:
        return False
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", PORTS[server], timeout=10)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def start_server(server: str, workers: int, log: Path, feast_max_requests: int) -> subprocess.Popen:
    """In a session of its own, so :func:`stop_server` can end every process of it."""
    from feedstore.settings import get_settings

    env = {**os.environ, **get_settings().feast_env()}
    with log.open("wb") as out:
        proc = subprocess.Popen(server_command(server, workers, feast_max_requests), env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 180
    while not _ready(server, workers, log):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc, grace=0)
            raise RuntimeError(f"{server} serve --workers {workers} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)
    return proc


def stop_server(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGTERM to the server, then SIGKILL to its whole session: gunicorn's master waits 30 s
    for a worker stuck in start-up, and killing only the master left that worker on the port."""
    import signal

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# ---- load -------------------------------------------------------------------------------------

def request_bytes(body: bytes) -> bytes:
    return (b"POST /get-online-features HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def bodies(n: int, users: int, online_items: int, items_per_request: int) -> list[bytes]:
    import numpy as np

    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        user = int(rng.integers(1, users + 1))
        items = [int(i) for i in rng.integers(1, online_items + 1, items_per_request)]
        out.append(json.dumps({"feature_service": "ranking",
                               "entities": {"user_id": [user] * items_per_request, "item_id": items}}).encode())
    return out


def _header(head: bytes, name: bytes) -> bytes | None:
    at = head.find(b"\r\n" + name + b":")
    if at < 0:
        return None
    end = head.find(b"\r\n", at + 2)
    return head[at + len(name) + 3: end if end >= 0 else len(head)].strip()


class Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection, one request at a time: the response is complete when
    Content-Length bytes followed the headers (both servers send it). ~20 µs of client CPU a
    request, where ``http.client`` takes ~100 µs."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = int(_header(head, b"content-length") or 0)
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4: end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.waiter.set_result((int(head[9:12]), _header(head, b"x-feedstore-worker"),
                                _header(head, b"connection") == b"close", body))

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by the server"))

    async def send(self, request: bytes):
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


class Load:
    """What one measurement window collected over all its clients."""

    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.workers: dict[str, int] = {}
        self.reconnects = 0
        self.errors: list[str] = []


async def _open(port: int) -> Connection:
    _, conn = await asyncio.get_running_loop().create_connection(Connection, "127.0.0.1", port)
    return conn


async def _client(port: int, requests: list[bytes], offset: int, until: float, load: Load) -> None:
    conn = await _open(port)
    i = offset
    while time.perf_counter() < until:
        request = requests[i % len(requests)]
        i += 1
        started = time.perf_counter_ns()
        try:
            status, worker, close, body = await conn.send(request)
        except ConnectionError:  # stock Feast recycled the worker: reopen, resend, time it all
            load.reconnects += 1
            conn = await _open(port)
            status, worker, close, body = await conn.send(request)
        load.latencies_ns.append(time.perf_counter_ns() - started)
        if status != 200:
            load.errors.append(body[:300].decode(errors="replace"))
        if worker is not None:
            load.workers[worker.decode()] = load.workers.get(worker.decode(), 0) + 1
        if close or conn.transport is None:
            load.reconnects += 1
            conn = await _open(port)
    if conn.transport is not None:
        conn.transport.close()


async def _run_clients(port: int, clients: int, requests: list[bytes], seconds: float) -> tuple[Load, float]:
    load = Load()
    until = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, requests, c * 97, until, load) for c in range(clients)))
    return load, time.perf_counter() - started


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu_seconds(pid: int) -> float:
    """CPU time of the server's whole process tree: the live processes' own, plus what the
    parent's reaped children used (gunicorn's recycled workers), so a recycled worker's
    requests are not free."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in (root, *root.children(recursive=True)):
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    times = root.cpu_times()
    return total + times.children_user + times.children_system


def measure(port: int, server_pid: int, clients: int, requests: list[bytes], seconds: float, warmup: float) -> dict:
    """``warmup`` seconds discarded, then ``seconds`` measured, with ``clients`` connections.
    Besides the rate (what the server got of a machine others may share too), the server's CPU
    time per request: what an answer costs whatever else runs."""
    import numpy as np
    import uvloop

    uvloop.run(_run_clients(port, clients, requests, warmup))
    cpu, server_cpu = _cpu_seconds(), server_cpu_seconds(server_pid)
    load, wall = uvloop.run(_run_clients(port, clients, requests, seconds))
    client_cpu = (_cpu_seconds() - cpu) / wall
    server_cpu = server_cpu_seconds(server_pid) - server_cpu
    if load.errors:
        raise RuntimeError(f"{len(load.errors)} non-200 answers, first: {load.errors[0]}")
    ms = np.asarray(load.latencies_ns) / 1e6
    return {"requests": len(ms), "seconds": wall, "rps": len(ms) / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "reconnects": load.reconnects,
            "client_cpu": client_cpu, "server_cpu_ms_per_request": server_cpu * 1000 / len(ms),
            "server_cores": server_cpu / wall, "loadavg_1m": os.getloadavg()[0], "per_worker": dict(sorted(load.workers.items()))}


async def _answer(port: int, request: bytes) -> dict:
    conn = await _open(port)
    status, _, _, body = await conn.send(request)
    conn.transport.close()
    if status != 200:
        raise RuntimeError(body[:300].decode(errors="replace"))
    return _by_name(body)


def _by_name(body: bytes) -> dict:
    """An answer with its features keyed by name (Feast orders feature sets differently per
    process): the two servers' answers to the same requests must be equal."""
    answer = json.loads(body)
    return dict(zip(answer["metadata"]["feature_names"], answer["results"], strict=True))


# ---- run --------------------------------------------------------------------------------------

def _median_of(runs: list[dict]) -> dict:
    import numpy as np

    keys = ("rps", "p50_ms", "p99_ms", "max_ms", "client_cpu", "server_cpu_ms_per_request", "server_cores",
            "loadavg_1m", "reconnects", "requests")
    return {"reps": len(runs), **{k: float(np.median([r[k] for r in runs])) for k in keys},
            "runs": runs}


def run(args, console) -> dict:
    requests = [request_bytes(b) for b in bodies(1000, args.users, args.online_items, args.items_per_request)]
    runs: dict[str, list[dict]] = {}
    answers: dict[str, list[dict]] = {}
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    for rep in range(args.reps):
        for workers in args.workers:
            order = SERVERS if rep % 2 == 0 else SERVERS[::-1]  # neither always goes first
            for server in order:
                with console.status(f"{server} serve --workers {workers} ({rep + 1}/{args.reps})…"):
                    proc = start_server(server, workers, logs / f"{server}-{workers}-{rep}.log",
                                        args.feast_max_requests)
                    try:
                        import uvloop

                        answers[server] = [uvloop.run(_answer(PORTS[server], r)) for r in requests[:20]]
                        for clients in args.clients:
                            got = measure(PORTS[server], proc.pid, clients, requests, args.seconds,
                                          args.warmup_seconds)
                            runs.setdefault(f"{server}_w{workers}_c{clients}", []).append(got)
                    finally:
                        stop_server(proc)
    same = answers.get("feedstore") == answers.get("feast") and answers.get("feast") is not None
    return {"medians": {k: _median_of(v) for k, v in runs.items()}, "same_answers": same,
            **({} if same else {"answers_differ": answers})}


def summary_rows(results: dict, args) -> list[dict]:
    """Per worker count and client count: ours and stock side by side, ratios ours/stock."""
    rows = []
    m = results["medians"]
    for workers in args.workers:
        for clients in args.clients:
            o, s = m[f"feedstore_w{workers}_c{clients}"], m[f"feast_w{workers}_c{clients}"]
            rows.append({"workers": workers, "clients": clients, "feedstore": o, "feast": s,
                         "rps_ratio": o["rps"] / s["rps"], "p99_ratio": o["p99_ms"] / s["p99_ms"],
                         "cpu_per_request_ratio": o["server_cpu_ms_per_request"] / s["server_cpu_ms_per_request"]})
    return rows


def table(rows: list[dict], args):
    from rich.table import Table

    t = Table("workers", "clients", "feedstore req/s", "feast req/s", "req/s ratio", "feedstore p50/p99/max ms",
              "feast p50/p99/max ms", "p99 ratio", "server CPU ms/request", "server cores used", "client cores",
              "feast reconnects")
    for r in rows:
        o, s = r["feedstore"], r["feast"]
        t.add_row(str(r["workers"]), str(r["clients"]), f"{o['rps']:,.0f}", f"{s['rps']:,.0f}",
                  f"{r['rps_ratio']:.2f}x", f"{o['p50_ms']:.2f} / {o['p99_ms']:.2f} / {o['max_ms']:.0f}",
                  f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f} / {s['max_ms']:.0f}", f"{r['p99_ratio']:.2f}x",
                  f"{o['server_cpu_ms_per_request']:.2f} / {s['server_cpu_ms_per_request']:.2f}",
                  f"{o['server_cores']:.2f} / {s['server_cores']:.2f}",
                  f"{o['client_cpu']:.2f} / {s['client_cpu']:.2f}", f"{s['reconnects']:.0f}")
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=2_000)
    p.add_argument("--online-items", type=int, default=20_000)
    p.add_argument("--hist-entities", type=int, default=100, help="bench_feast's 30-day history (unused here)")
    p.add_argument("--items-per-request", type=int, default=10, help="N in 1 user + N items per request")
    p.add_argument("--clients", type=lambda v: [int(x) for x in v.split(",")], default=[1, 4, 16])
    p.add_argument("--workers", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2])
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per client count")
    p.add_argument("--warmup-seconds", type=float, default=1.0)
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (a fresh server each)")
    p.add_argument("--feast-max-requests", type=int, default=0,
                   help="feast serve --max-requests (its default 1000 recycles workers; with --workers 2 and the "
                   "SQL registry a recycled worker, forked with the master's registry connection, failed to boot "
                   "('lost synchronization with server') and gunicorn shut the whole server down, in two of two "
                   "runs here; 0: no recycling, stock's best case)")
    args = p.parse_args()
    from rich.console import Console

    console = Console(width=max(Console().width, 160))
    redis_proc = bench_feast.start_redis()
    os.environ["BENCH_REDIS_PID"] = str(redis_proc.pid)
    try:
        with namespace(console):
            bench_feast.setup_data(argparse.Namespace(items=0, users=args.users, online_items=args.online_items,
                                                      hist_entities=args.hist_entities), with_bench_view=False)
            bench_feast.materialize_online(console)
            loadavg_start = bench_feast._load()
            results = run(args, console)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
    rows = summary_rows(results, args)
    out = {"args": {k: v for k, v in vars(args).items()}, "machine_cpus": os.cpu_count(),
           "loadavg_start": loadavg_start, "loadavg_end": bench_feast._load(), **results,
           "table": [{k: v for k, v in r.items() if k not in ("feedstore", "feast")} |
                     {f"{srv}_{q}": r[srv][q] for srv in ("feedstore", "feast")
                      for q in ("rps", "p50_ms", "p99_ms", "max_ms", "client_cpu", "server_cpu_ms_per_request",
                                "server_cores")} for r in rows]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    console.print(table(rows, args))
    console.print(f"medians of {args.reps} interleaved runs, {args.seconds:g} s each, 1 user × "
                  f"{args.items_per_request} items per request; answers equal: {results['same_answers']}; "
                  f"load average {loadavg_start} → {out['loadavg_end']}")
    console.print(f"results: {RESULTS}")


if __name__ == "__main__":
    main()
