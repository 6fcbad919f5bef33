"""The stack's Redis Cluster heals what a lost node directory leaves: a node started empty on a
cluster's port (its replica role forgotten, its master left without a replica) makes ``up``
rebuild the cluster whole instead of reporting it ready."""

from __future__ import annotations

import os
import shutil
import signal

from devtools.stack.base import wait_until


def test_a_node_restarted_empty_is_found_and_the_cluster_rebuilt_whole(redis_cluster):
    assert redis_cluster.problems() == []
    replica = next(p for p in redis_cluster.ports if redis_cluster.node(p).info("replication")["role"] == "slave")
    pid, _ = redis_cluster.node_process(replica)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not redis_cluster._ping(replica), 10)
    shutil.rmtree(redis_cluster.node_dir(replica), ignore_errors=True)
    redis_cluster.start_node(replica, redis_cluster.node_dir(replica))
    assert wait_until(lambda: redis_cluster._ping(replica), 10)

    assert wait_until(lambda: redis_cluster.problems() != [], 10)
    assert not redis_cluster.ready()
    assert redis_cluster.up() is True
    assert redis_cluster.problems() == []
    client = redis_cluster.client()
    client.set("{test_redis_cluster}:k", "v")
    assert client.get("{test_redis_cluster}:k") == b"v"
    masters = [p for p in redis_cluster.ports if redis_cluster.node(p).info("replication")["role"] == "master"]
    assert len(masters) == 3
    for port in redis_cluster.ports:
        assert redis_cluster.node_process(port)[1] == redis_cluster.node_dir(port)


def test_a_node_whose_directory_was_deleted_is_found(redis_cluster):
    port = redis_cluster.ports[-1]
    _, directory = redis_cluster.node_process(port)
    (directory / "nodes.conf").rename(directory / "nodes.conf.moved")
    try:
        assert f"{port}: its directory {directory} is gone" in redis_cluster.problems()
    finally:
        (directory / "nodes.conf.moved").rename(directory / "nodes.conf")
    assert redis_cluster.problems() == []
