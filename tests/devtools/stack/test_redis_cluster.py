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
    pid, directory = redis_cluster.node_process(replica)
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not redis_cluster._ping(replica), 10)
    (directory / "nodes.conf").unlink()
    shutil.rmtree(directory / "appendonlydir", ignore_errors=True)
    redis_cluster.start_node(replica, directory)
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
