"""Session fixtures: the real local stack, and an isolated namespace in it per test session
(``devtools.sandbox``), so several sessions can share one stack."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis

from feedstore.settings import Settings, get_settings


@pytest.fixture(scope="session")
def stack() -> Settings:
    """Starts the stack if it is not running; a service that cannot start fails the session."""
    from devtools.stack import services

    base = get_settings()
    for service in services(base):
        service.up()
    return base


@pytest.fixture(scope="session")
def redis_cluster(stack: Settings):
    """The stack's Redis Cluster (``stack up --redis-cluster``), started once if it is not running.
    A cluster has one database: tests on it keep to entity ids of their own."""
    from devtools.stack.redis_cluster import RedisClusterService

    service = RedisClusterService(stack)
    service.up()
    return service


@pytest.fixture(scope="session")
def chromium() -> list[str]:
    """Headless Chromium (installed on first use) with the flags this closed network needs; callers
    add ``--user-data-dir`` and what to do."""
    from devtools.stack.tools import require

    return [require("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,1000"]


@pytest.fixture(scope="session")
def settings(stack: Settings) -> Iterator[Settings]:
    """An isolated, migrated namespace on the running stack, exported to the environment."""
    from devtools.sandbox import sandbox

    with sandbox("test") as isolated:
        yield isolated


@pytest.fixture()
def pg(settings: Settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.postgres.dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture()
def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis.url)


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice), for a server a test starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    """Where the kernel starts handing out client ports: a port above it may be taken by any
    outgoing connection between our check and the server's bind."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port_base(used: set[int]) -> int:
    """A port base whose neighbourhood (and gRPC +10000) is free on loopback and below the
    ephemeral range, so no client connection can take it before the server binds."""
    from devtools.stack.base import port_open

    top = _ephemeral_low() - 10_010
    for _ in range(200):
        base = random.randrange(10_000, top, 10)
        ports = [base + i for i in range(6)] + [base + 10000 + i for i in range(6)]
        if not used.intersection(ports) and not any(port_open("127.0.0.1", p) for p in ports):
            used.update(ports)
            return base
    raise RuntimeError("no free ports on loopback")


@contextmanager
def private_stack(stack: Settings, **overrides) -> Iterator[Settings]:
    """Settings for a second stack of our own (directory and ports), for tests that stop
    servers: the shared stack keeps running for everyone else. The caller starts what it needs."""
    used: set[int] = set()
    pg, rd, kafka, s3, weed, cluster = (_free_port_base(used) for _ in range(6))
    # Beside the shared stack's directory: pytest's tmp dirs are private to root, and
    # PostgreSQL runs as its own user.
    stack_dir = Path(tempfile.mkdtemp(prefix=".stack-test-", dir=stack.stack.dir.parent))
    stack_dir.chmod(0o755)
    try:
        groups: dict[str, dict] = {
            "stack": {"dir": stack_dir, "kafka_controller_port": kafka + 1, "seaweedfs_port_base": weed,
                      "redis_cluster_port": cluster},
            "postgres": {"dsn": f"postgresql://feedstore_owner:pw@127.0.0.1:{pg}/feedstore"},
            "redis": {"url": f"redis://feedstore-admin:pw@127.0.0.1:{rd}/0"},
            "kafka": {"bootstrap": f"127.0.0.1:{kafka}"},
            "s3": {"endpoint": f"http://127.0.0.1:{s3}", "bucket": "private"},
        }
        for group, fields in overrides.items():
            groups.setdefault(group, {}).update(fields)
        yield stack.replace(**groups)
    finally:
        shutil.rmtree(stack_dir, ignore_errors=True)
