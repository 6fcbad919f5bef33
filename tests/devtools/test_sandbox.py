"""Sandboxes on one shared Redis: each holds a database nobody else holds while it lives, nested
ones and those of other sessions included (they used to be handed out in turn, and one opened
inside another always got database 2, flushing and writing into whoever held it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest
import redis

from devtools.sandbox import RedisDatabases, sandbox


def _db(settings) -> int:
    return int(settings.redis.url.rsplit("/", 1)[1].split("?")[0])


@pytest.fixture()
def leases(redis_client: redis.Redis):
    """Two databases' leases under a prefix of this test's own (in the session's database)."""
    dbs = RedisDatabases(redis_client, prefix=f"test-leases:{uuid.uuid4().hex}:", numbers=range(1, 3))
    yield dbs
    for n in dbs.numbers:
        redis_client.delete(dbs.prefix + str(n))


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_sandbox_inside_another_holds_a_database_of_its_own(stack):
    databases = RedisDatabases.of(stack)
    with sandbox("outer") as outer:
        with sandbox("inner") as inner:
            held = {_db(outer): databases.holder(_db(outer)), _db(inner): databases.holder(_db(inner))}
            assert len(held) == 2, held
            for holder in held.values():
                assert holder is not None and holder.startswith(f"{socket.gethostname()}:{os.getpid()}:"), held
        assert not (databases.holder(_db(inner)) or "").startswith(f"{socket.gethostname()}:{os.getpid()}:inner")
    assert not (databases.holder(_db(outer)) or "").startswith(f"{socket.gethostname()}:{os.getpid()}:outer")


def test_a_held_database_is_never_handed_out(leases):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        leases.client.set(leases.prefix + "1", f"{socket.gethostname()}:{live.pid}:other-session")
        assert leases.claim("mine", wait_seconds=0) == 2
        with pytest.raises(RuntimeError, match=r"no free Redis database for sandbox late: 1 held by .*other-session"):
            leases.claim("late", wait_seconds=0)
    finally:
        live.kill()
        live.wait()


def test_a_dead_holders_database_is_reclaimed_and_another_hosts_is_kept(leases):
    leases.client.set(leases.prefix + "1", f"elsewhere:{_exited_pid()}:remote")
    leases.client.set(leases.prefix + "2", f"{socket.gethostname()}:{_exited_pid()}:killed")
    assert leases.claim("next", wait_seconds=0) == 2
    assert leases.holder(2) == f"{socket.gethostname()}:{os.getpid()}:next"
    assert leases.holder(1).endswith(":remote")


def test_release_gives_back_only_its_own_lease(leases):
    n = leases.claim("mine", wait_seconds=0)
    leases.release(n, "someone-else")
    assert leases.holder(n).endswith(":mine")
    leases.release(n, "mine")
    assert leases.holder(n) is None
    assert leases.claim("again", wait_seconds=0) == n
