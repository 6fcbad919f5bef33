"""The online store on a real Redis Cluster (three masters, a replica each): values read equal
values written across slots; a master killed (its replica promoted) and slots migrated while a
reader reads leave every read correct: an answer equal to what was written, or an error the
caller retries, never a wrong or missing value."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from devtools.stack.base import wait_until
from tests.feedstore.feast.online.conftest import now_us, write_at

ITEMS = 500
FEATURES = ["item_embedding:item_embedding", "item_catalog_features:category", "user_embedding:user_embedding"]


@pytest.fixture(scope="module")
def cluster_fs(fs, settings, redis_cluster):
    from feedstore.feast.store import store

    redis_cluster.up()  # whole again whatever a test before this module left
    return store(redis_cluster.settings_for(settings))


@pytest.fixture(scope="module")
def written(cluster_fs):
    """One user and 500 items of their own (the cluster has one database for every session)."""
    base = random.randrange(10**9, 2 * 10**9)
    user, items = base, list(range(base + 1, base + 1 + ITEMS))
    ts = now_us() - 60_000_000
    tables = {name: write_at(cluster_fs, name, ids, ts, seed=k)
              for k, (name, ids) in enumerate([("item_embedding", items), ("item_catalog_features", items),
                                               ("user_embedding", [user])])}
    by_item = {n: {r["item_id"]: r for r in tables[n].to_pylist()} for n in ("item_embedding", "item_catalog_features")}
    expected = {"item_embedding": [by_item["item_embedding"][i]["item_embedding"] for i in items],
                "category": [by_item["item_catalog_features"][i]["category"] for i in items],
                "user_embedding": [tables["user_embedding"].to_pylist()[0]["user_embedding"]] * ITEMS}
    return user, items, expected


def _read(cluster_fs, user: int, items: list[int]) -> dict:
    return cluster_fs.get_online_features(features=FEATURES,
                                          entity_rows=[{"user_id": user, "item_id": i} for i in items]).to_dict()


def _primary_ports(redis_cluster) -> dict[int, int]:
    """Slot -> port of the master serving it now."""
    owner = {}
    for (start, end), node in redis_cluster.client().cluster_slots().items():
        for slot in range(start, end + 1):
            owner[slot] = node["primary"][1]
    return owner


class _Reader(threading.Thread):
    """Reads the same rows again and again, sorting every answer into right, wrong or error."""

    def __init__(self, cluster_fs, user, items, expected) -> None:
        super().__init__(daemon=True)
        self.args, self.expected = (cluster_fs, user, items), expected
        self.right = self.wrong = self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                got = _read(*self.args)
            except Exception:  # noqa: BLE001 - the caller retries; counted, never a wrong value
                self.errors += 1
                time.sleep(0.05)
                continue
            if all(got[k] == v for k, v in self.expected.items()):
                self.right += 1
            else:
                self.wrong += 1

    def reads_after(self, more: int, timeout: float = 60) -> None:
        target = self.right + more
        deadline = time.monotonic() + timeout
        while self.right < target and time.monotonic() < deadline:
            time.sleep(0.1)
        assert self.right >= target, f"only {self.right} right reads (errors {self.errors}, wrong {self.wrong})"


def test_values_read_equal_values_written_across_slots(cluster_fs, written, redis_cluster):
    user, items, expected = written
    got = _read(cluster_fs, user, items)
    for name, values in expected.items():
        assert got[name] == values, name
    client = redis_cluster.client()
    owner = _primary_ports(redis_cluster)
    slots = {client.keyslot(f"feed_ranking:{{item_id={i}}}:item_embedding") for i in items}
    assert len({owner[s] for s in slots}) == 3, "500 items did not spread over the three masters"


def test_a_master_killed_mid_reads_fails_over_and_no_read_is_wrong(cluster_fs, written, redis_cluster):
    user, items, expected = written
    seed = redis_cluster.ports[0]
    victims = sorted({p for p in _primary_ports(redis_cluster).values() if p != seed})
    victim = victims[0]
    pid, directory = redis_cluster.node_process(victim)
    reader = _Reader(cluster_fs, user, items, expected)
    reader.start()
    try:
        reader.reads_after(3)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while victim in set(_primary_ports(redis_cluster).values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert victim not in set(_primary_ports(redis_cluster).values()), f"no replica was promoted: {redis_cluster.problems()}"
        reader.reads_after(5)
    finally:
        reader.stop.set()
        reader.join(30)
        redis_cluster.start_node(victim, directory)  # back as a replica of the promoted one
        assert wait_until(redis_cluster.ready, 60), "the cluster did not come back to ok"
    assert reader.wrong == 0, f"{reader.wrong} wrong reads of {reader.right + reader.wrong}"


def test_slots_migrated_while_reading_and_writing_keep_every_read_correct(cluster_fs, written, redis_cluster):
    user, items, expected = written
    client = redis_cluster.client()
    owner = _primary_ports(redis_cluster)
    slot_of = {i: client.keyslot(f"feed_ranking:{{item_id={i}}}:item_embedding") for i in items}
    source = owner[slot_of[items[0]]]
    target = next(p for p in sorted(set(owner.values())) if p != source)
    moved = sorted({s for s in slot_of.values() if owner[s] == source})[:40]
    reader = _Reader(cluster_fs, user, items, expected)
    reader.start()
    try:
        reader.reads_after(3)
        for slot in moved:
            _migrate_slot(redis_cluster, slot, source, target)
        reader.reads_after(5)
    finally:
        reader.stop.set()
        reader.join(30)
    assert reader.wrong == 0, f"{reader.wrong} wrong reads of {reader.right + reader.wrong}"
    now = _primary_ports(redis_cluster)
    assert all(now[s] == target for s in moved)
    newer = write_at(cluster_fs, "item_catalog_features", items, now_us() - 1_000_000, seed=99)
    got = _read(cluster_fs, user, items)
    assert got["category"] == [r["category"] for r in newer.to_pylist()]


def _migrate_slot(redis_cluster, slot: int, source: int, target: int) -> None:
    """What ``redis-cli --cluster reshard`` does for one slot: IMPORTING/MIGRATING, MIGRATE its
    keys, then the slot assigned to the target on both."""
    import redis

    user, password = redis_cluster.admin_credentials()
    src = redis.Redis(port=source, username=user, password=password)
    dst = redis.Redis(port=target, username=user, password=password)
    src_id, dst_id = src.cluster("myid"), dst.cluster("myid")
    dst.cluster("setslot", slot, "importing", src_id)
    src.cluster("setslot", slot, "migrating", dst_id)
    while keys := src.cluster("getkeysinslot", slot, 100):
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "AUTH2", user, password, "KEYS", *keys)
    for node in (dst, src):
        node.cluster("setslot", slot, "node", dst_id)
