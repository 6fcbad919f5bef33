"""``feedstore serve --workers N``: N long-lived uvicorn processes answering on one port.

One Python process answers one request at a time (the read and the JSON run in its event loop),
so one process uses one core. Each worker here is a fresh interpreter that builds, warms up and
GC-tunes its own app (:func:`feedstore.feast.serving.serving_app`) and only then binds its own
``SO_REUSEPORT`` socket: the kernel spreads new connections over the workers that are ready, and
a worker still loading the registry gets none. Unlike ``feast serve --workers`` (gunicorn), no
worker is recycled after N requests, so no connection is dropped and no warm-up is repeated.

The parent only supervises: it holds the port (bound, not listening, so no other server can take
it while the workers load), forwards SIGTERM/SIGINT to the workers as SIGTERM (uvicorn finishes
the requests in flight), waits for them and exits 0. A worker that exits on its own is logged
(``serve.worker_died``) and the parent stops the others and exits 1: a crash-looping worker is the
process manager's to see (systemd, Kubernetes), not something to hide behind restarts. Workers
die with the parent (``PR_SET_PDEATHSIG``) even when it is killed.

Prometheus: the workers share a fresh ``PROMETHEUS_MULTIPROC_DIR`` (removed at exit), so GET
/metrics on any worker returns the sum over all of them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import structlog

from feedstore.settings import Settings, get_settings

log = structlog.get_logger(__name__)

_WORKER = ("import sys; from feedstore.feast.serve_workers import worker_main; "
           "sys.exit(worker_main(sys.argv[1:]))")


def _family(host: str, port: int) -> tuple[socket.AddressFamily, tuple]:
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return family, address


def bind_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to host:port (SO_REUSEADDR as uvicorn sets it; SO_REUSEPORT to share)."""
    family, address = _family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def reserve_port(host: str, port: int) -> socket.socket:
    """Fails (OSError) if anything listens on the port, another SO_REUSEPORT group included,
    then holds it with a bound, never listening, SO_REUSEPORT socket: the kernel hands
    connections only to listening sockets, so this one takes none."""
    bind_socket(host, port, reuse_port=False).close()
    return bind_socket(host, port, reuse_port=True)


def _die_with_parent(parent: int) -> None:
    """SIGTERM when the supervisor dies, however it dies, so no worker is left orphaned."""
    import ctypes

    pr_set_pdeathsig = 1
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux only
    if prctl is not None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def worker_main(argv: list[str]) -> int:
    """One worker: its own app, warmed up and GC-tuned, then its own socket on the shared port."""
    from feedstore.feast.serving import serve_until_signalled, serving_app, uvicorn_config
    from feedstore.logs import configure_logging

    host, port, log_level, parent = argv[0], int(argv[1]), argv[2], int(argv[3])
    _die_with_parent(parent)
    configure_logging(log_level)
    structlog.contextvars.bind_contextvars(worker=os.getpid())
    settings = get_settings().as_component("serve")
    app = serving_app(settings, multiprocess=True)
    sock = bind_socket(host, port, reuse_port=True)
    sock.listen(2048)
    log.info("serve_started", host=host, port=port, pid=os.getpid(), metrics=f"http://{host}:{port}/metrics")
    serve_until_signalled(uvicorn_config(app, log_level, settings), sockets=[sock])
    return 0


def _start_worker(host: str, port: int, log_level: str, metrics_dir: str) -> subprocess.Popen:
    """A fresh interpreter (not a fork: Feast's clients and threads do not survive one) in a
    session of its own, so a terminal's Ctrl-C reaches only the parent, which forwards it once."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, "PROMETHEUS_MULTIPROCESS_DIR": metrics_dir}
    return subprocess.Popen([sys.executable, "-c", _WORKER, host, str(port), log_level, str(os.getpid())],
                            env=env, start_new_session=True)


def _stop(workers: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM to every live worker, then SIGKILL to any still running ``grace`` seconds later
    (one deadline for all: waiting ``grace`` for each in turn made N workers take N times it)."""
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in workers:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("serve.worker_killed", pid=proc.pid, after_seconds=grace)
            proc.kill()
            proc.wait()


def supervise(host: str, port: int, workers: int, log_level: str, settings: Settings) -> int:
    """Runs ``workers`` workers until SIGTERM/SIGINT (returns 0) or until one dies (returns 1)."""
    reservation = reserve_port(host, port)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    metrics_dir = tempfile.mkdtemp(prefix="feedstore-serve-metrics-")
    procs: list[subprocess.Popen] = []
    died = None
    try:
        procs = [_start_worker(host, port, log_level, metrics_dir) for _ in range(workers)]
        log.info("serve.workers_started", host=host, port=port, workers=workers, pids=[p.pid for p in procs],
                 metrics_dir=metrics_dir)
        while died is None and not stop.wait(0.2):
            died = next((p for p in procs if p.poll() is not None), None)
        if died is not None:
            log.error("serve.worker_died", pid=died.pid, returncode=died.returncode,
                      action="stopping the other workers; exit 1")
    finally:
        _stop(procs, settings.serve.shutdown_grace_seconds)
        reservation.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("serve.stopped", workers=workers, exit_code=1 if died is not None else 0)
    return 1 if died is not None else 0
