"""Redis 7 from Debian, append-only file on, data in the stack directory, an ACL user per component.

The ACL rules (``acl_rules``) are the ones to give a managed Redis or every node of a Redis
Cluster (key patterns and command categories work the same there)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis
import yaml

from devtools.stack.base import Service, StackError, terminate
from devtools.stack.tools import require
from feedstore.settings import Settings

_CONNECTION = "resetchannels -@all +@connection"
_DATA = "+@read +@write +@keyspace +@scripting +@transaction"
_READ = "+@read +evalsha +eval +script|load +script|exists"
# Last, so that nothing above lets them back in; the cluster commands are what cluster clients ask.
_DENY = "-@dangerous -script|flush -script|kill -function +select +cluster|slots +cluster|shards +cluster|nodes"


def feast_project(settings: Settings) -> str:
    return yaml.safe_load((Path(settings.feast.repo_path) / "feature_store.yaml").read_text())["project"]


def acl_rules(settings: Settings) -> dict[str, str]:
    """Per component: its commands and keys (Feast keys are ``<project>:{<join keys>}:<view>``).
    ingest: hot counters, the realtime view it pushes, the streamed items' views and the
    newest-value record; pipeline: every online key; serve and
    reader: reads of online keys only."""
    project = feast_project(settings)
    return {
        "ingest": f"{_CONNECTION} {_DATA} {_DENY} ~user:* ~{project}:{{user_id=*}}:user_realtime_features "
                  f"~{project}:{{item_id=*}}:item_catalog_features ~{project}:{{item_id=*}}:item_embedding "
                  f"~{project}:_newest",
        "pipeline": f"{_CONNECTION} {_DATA} {_DENY} ~{project}:*",
        "serve": f"{_CONNECTION} {_READ} {_DENY} %R~{project}:*",
        "reader": f"{_CONNECTION} {_READ} {_DENY} %R~{project}:* %R~user:*",
    }


def _credentials(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return unquote(parts.username or "default"), unquote(parts.password or "")


class RedisService(Service):
    name = "redis"

    @property
    def acl_file(self) -> Path:
        return self.dir.resolve() / "users.acl"

    def install(self) -> None:
        require("redis-server")

    def _users(self) -> dict[str, str]:
        """ACL SETUSER arguments per user: the administrator, each component, the default user off."""
        users = {}
        admin, password = _credentials(self.settings.redis.url)
        users[admin] = f"on {'>' + password if password else 'nopass'} ~* &* +@all"
        for component, rules in acl_rules(self.settings).items():
            user, secret = _credentials(self.settings.redis.url_for(component))
            if user != admin:
                users[user] = f"on >{secret} {rules}"
        if admin != "default":
            users["default"] = "off resetkeys -@all"
        return users

    def start(self) -> None:
        self.acl_file.write_text("".join(f"user {u} {r}\n" for u, r in self._users().items()))
        self.acl_file.chmod(0o600)
        cmd = [
            require("redis-server"),
            "--port", str(self.settings.redis.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--daemonize", "yes",
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.log_file),
            "--aclfile", str(self.acl_file),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"redis failed to start: {result.stderr.strip()}; see its log: {self.log_file}")

    def _admin(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis.url, socket_timeout=5)

    def _open_default(self) -> redis.Redis:
        """A server started before the ACL users (the default user open) is reached as default."""
        url = urlsplit(self.settings.redis.url)
        return redis.Redis(host=url.hostname or "127.0.0.1", port=self.settings.redis.port, socket_timeout=5)

    def ready(self) -> bool:
        for client in (self._admin, self._open_default):
            try:
                if client().ping():
                    return True
            except redis.AuthenticationError:
                continue
            except redis.RedisError:
                return False
        return False

    def provision(self) -> None:
        """Creates or updates the ACL users. The default user is switched off only on a server
        this stack started with its ACL file: on an older one other clients may still use it."""
        try:
            client = self._admin()
            client.ping()
        except redis.AuthenticationError:
            client = self._open_default()
        started_with_acl = bool(client.config_get("aclfile").get("aclfile"))
        for user, rules in self._users().items():
            if user == "default" and not started_with_acl:
                continue
            client.execute_command("ACL", "SETUSER", user, "reset", *rules.split())
        if started_with_acl:
            client.execute_command("ACL", "SAVE")

    def stop(self) -> None:
        if self.ready():
            try:
                self._admin().shutdown(save=True)
            except redis.ConnectionError:
                pass
            except redis.AuthenticationError:
                self._open_default().shutdown(save=True)
        terminate(self.pid_file, grace=10)

    def endpoint(self) -> str:
        url = urlsplit(self.settings.redis.url)
        return url._replace(netloc=f"{url.username}@{url.hostname}:{url.port}", query="").geturl()
