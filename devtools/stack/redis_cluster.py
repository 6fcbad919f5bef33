"""A Redis Cluster on loopback for the scale-out tests and for trying the project on one:
three masters and a replica each (Debian's redis-server in cluster mode), the same ACL users as
the single server, started by ``stack up --redis-cluster``.

Point the project at it with ``FEED_REDIS_CLUSTER=true`` and ``FEED_REDIS_URL`` naming any node
(``stack up --redis-cluster`` prints both)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster

from devtools.stack.base import Service, StackError
from devtools.stack.redis import RedisService, _credentials
from devtools.stack.tools import require
from feedstore.logs import get_logger
from feedstore.settings import Settings

log = get_logger(__name__)

MASTERS, REPLICAS_PER_MASTER = 3, 1
NODE_TIMEOUT_MS = 2_000  # a master down this long is failed over to its replica


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RedisClusterService(Service):
    name = "redis-cluster"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        first = settings.stack.redis_cluster_port
        self.ports = list(range(first, first + MASTERS * (1 + REPLICAS_PER_MASTER)))

    @property
    def log_file(self) -> Path:
        return self.node_dir(self.ports[0]) / "redis.log"

    def node_dir(self, port: int) -> Path:
        return self.dir.resolve() / str(port)

    def install(self) -> None:
        require("redis-server")
        require("redis-cli")

    def admin_credentials(self) -> tuple[str, str]:
        return _credentials(self.settings.redis.url)

    def _admin_args(self) -> list[str]:
        user, password = self.admin_credentials()
        return ["--user", user, "--pass", password, "--no-auth-warning"]

    def start(self) -> None:
        """Starts every node that does not answer (all on a first start; one a test killed later),
        forms the cluster unless its nodes know each other already, and rebuilds it empty in this
        stack's directories when it does not become healthy: a node started empty beside a
        cluster it never joined, or nodes left running in a directory since deleted (another
        checkout's), leave a master without a replica or a node that cannot persist."""
        from devtools.stack.base import wait_until

        for port in self.ports:
            if not self._ping(port):
                self.start_node(port, self.node_dir(port))
        answering = wait_until(lambda: all(self._ping(p) for p in self.ports), 30)
        if answering and not self._formed():
            self._create()
        elif not answering or not wait_until(self.ready, 30):
            log.warning("redis_cluster_rebuilt", problems=self.problems())
            self._rebuild()

    def start_node(self, port: int, node: Path) -> None:
        """One node in ``node`` (its data, ``nodes.conf`` and ACL file): a node restarted in the
        directory it ran in rejoins the cluster it knew."""
        node.mkdir(parents=True, exist_ok=True)
        acl = node / "users.acl"
        acl.write_text("".join(f"user {u} {r}\n" for u, r in RedisService(self.settings)._users().items()))
        acl.chmod(0o600)
        user, password = self.admin_credentials()
        cmd = [require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node),
               "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
               "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--appendonly", "yes",
               "--appendfsync", "everysec", "--masteruser", user, "--masterauth", password,
               "--daemonize", "yes", "--pidfile", str(node / "redis.pid"),
               "--logfile", str(node / "redis.log"), "--aclfile", str(acl)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"redis cluster node {port} failed to start: {result.stderr.strip()}")

    def node(self, port: int) -> redis.Redis:
        user, password = self.admin_credentials()
        return redis.Redis(port=port, username=user, password=password, socket_timeout=2)

    def node_process(self, port: int) -> tuple[int, Path]:
        """The node's process id and directory, asked of the node itself (whichever checkout
        started it)."""
        client = self.node(port)
        return int(client.info("server")["process_id"]), Path(client.config_get("dir")["dir"])

    def _formed(self) -> bool:
        for port in self.ports:
            try:
                info = self.node(port).cluster("info")
            except redis.RedisError:
                continue
            return int(info.get("cluster_known_nodes", 0)) >= len(self.ports)
        return False

    def _create(self) -> None:
        cmd = [require("redis-cli"), *self._admin_args(), "--cluster", "create",
               *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-replicas", str(REPLICAS_PER_MASTER),
               "--cluster-yes"]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise StackError(f"redis-cli --cluster create failed: {(result.stdout + result.stderr).strip()[-400:]}")

    def _ping(self, port: int) -> bool:
        try:
            return bool(self.node(port).ping())
        except redis.RedisError:
            return False

    def client(self) -> RedisCluster:
        user, password = _credentials(self.settings.redis.url)
        return RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.ports], username=user,
                            password=password, socket_timeout=5)

    def settings_for(self, settings: Settings) -> Settings:
        """``settings`` with the administrator's Redis URL on the cluster's first node."""
        url = urlsplit(settings.redis.url)
        netloc = f"{url.netloc.rpartition('@')[0]}@127.0.0.1:{self.ports[0]}"
        return settings.replace(redis={"cluster": True, "url": url._replace(netloc=netloc, path="/0").geturl()})

    def ready(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """What keeps the cluster from being whole: a node down or unknown, a slot not served or
        mid-migration, a master without an in-sync replica. Empty when healthy."""
        found = []
        views = {}
        for port in self.ports:
            try:
                views[port] = (self.node(port).cluster("info"), self.node(port).execute_command("CLUSTER NODES"))
                found += self._persistence_problems(port)
            except redis.RedisError as exc:
                found.append(f"{port}: {exc}")
        for port, (info, _) in views.items():
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.ports):
                found.append(f"{port}: state {info.get('cluster_state')}, knows {info.get('cluster_known_nodes')}")
            if int(info.get("cluster_slots_ok", 0)) != 16384:
                found.append(f"{port}: {info.get('cluster_slots_ok')} of 16384 slots ok")
        if found or not views:
            return found or ["no node answers"]
        found += self._topology_problems(next(iter(views.values()))[1])
        return found

    def _persistence_problems(self, port: int) -> list[str]:
        """A node whose directory is gone (its checkout deleted) answers but loses what it is sent."""
        node = self.node(port)
        directory = Path(node.config_get("dir")["dir"])
        info = node.info("persistence")
        if not (directory / "nodes.conf").exists():
            return [f"{port}: its directory {directory} is gone"]
        if info.get("aof_last_write_status", "ok") != "ok" or info.get("rdb_last_bgsave_status", "ok") != "ok":
            return [f"{port}: cannot write to {directory}"]
        return []

    def _topology_problems(self, nodes: dict) -> list[str]:
        """From one node's ``CLUSTER NODES`` (as redis-py parses it)."""
        found, masters, replicas_of = [], {}, {}
        for address, node in nodes.items():
            port, flags = int(address.rpartition(":")[2].split("@")[0]), node["flags"].split(",")
            if {"fail", "fail?", "noaddr", "handshake"} & set(flags) or not node["connected"]:
                found.append(f"{port}: {node['flags']}, connected {node['connected']}")
            if node["migrations"]:
                found.append(f"{port}: slots mid-migration")
            if "master" in flags:
                masters[node["node_id"]] = port
            else:
                replicas_of.setdefault(node["master_id"], []).append(port)
        for node_id, port in masters.items():
            if not any(self._replica_in_sync(r) for r in replicas_of.get(node_id, [])):
                found.append(f"{port}: a master without an in-sync replica")
        return found

    def _replica_in_sync(self, port: int) -> bool:
        try:
            info = self.node(port).info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up" and not info.get("master_sync_in_progress")

    def _rebuild(self) -> None:
        """Every node stopped, its directory emptied, and the cluster formed anew."""
        from devtools.stack.base import wait_until

        for port in self.ports:
            try:
                self.node(port).shutdown(nosave=True)
            except redis.RedisError:
                pass  # the shutdown closes the connection
        if not wait_until(lambda: not any(_listening(p) for p in self.ports), 30):
            raise StackError(f"redis cluster nodes did not stop for the rebuild: {[p for p in self.ports if _listening(p)]}")
        for port in self.ports:
            shutil.rmtree(self.node_dir(port), ignore_errors=True)
            self.start_node(port, self.node_dir(port))
        if not wait_until(lambda: all(self._ping(p) for p in self.ports), 30):
            raise StackError(f"redis cluster nodes did not answer; see {self.dir}/<port>/redis.log")
        self._create()

    def provision(self) -> None:
        """The ACL users on every node (a cluster does not share them)."""
        for port in self.ports:
            node = self.node(port)
            try:
                for name, rules in RedisService(self.settings)._users().items():
                    node.execute_command("ACL", "SETUSER", name, "reset", *rules.split())
                node.execute_command("ACL", "SAVE")
            except redis.ConnectionError:
                continue  # a node down (a test killed it): it reads its ACL file when it restarts

    def stop(self) -> None:
        for port in self.ports:
            try:
                self.node(port).shutdown(save=True)
            except redis.ConnectionError:
                pass  # already down (or the shutdown closed the connection, as it does)
            except redis.RedisError:
                continue

    def running(self) -> bool:
        return any(self._ping(p) for p in self.ports)

    def endpoint(self) -> str:
        url = urlsplit(self.settings.redis.url)
        return f"redis://{url.username}@127.0.0.1:{self.ports[0]}/0 (cluster, ports {self.ports[0]}-{self.ports[-1]})"
