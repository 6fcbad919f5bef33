"""Redis 7 from Debian, append-only file on, data in the stack directory."""

from __future__ import annotations

import subprocess

import redis

from devtools.stack.base import Service, StackError, terminate
from devtools.stack.tools import require


class RedisService(Service):
    name = "redis"

    def install(self) -> None:
        require("redis-server")

    def start(self) -> None:
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
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"redis failed to start: {result.stderr.strip()}; see its log: {self.log_file}")

    def ready(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.settings.redis.url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.ready():
            try:
                redis.Redis.from_url(self.settings.redis.url).shutdown(save=True)
            except redis.ConnectionError:
                pass
        terminate(self.pid_file, grace=10)

    def endpoint(self) -> str:
        return self.settings.redis.url
