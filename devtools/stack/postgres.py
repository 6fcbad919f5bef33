"""PostgreSQL 15 from Debian's binaries, in a cluster of its own under the stack directory."""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from devtools.stack.base import Service, StackError, is_root
from devtools.stack.tools import require

SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "shared_buffers": "512MB",
    "max_connections": "200",
    "max_wal_size": "4GB",
    "work_mem": "32MB",
    "maintenance_work_mem": "256MB",
}


class PostgresService(Service):
    name = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.dir.resolve() / "data"

    def _run_as_owner(self, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        """initdb and pg_ctl refuse to run as root, so root runs them as ``postgres``."""
        if is_root():
            cmd = [require("runuser"), "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, **kwargs)

    def install(self) -> None:
        require("initdb")
        require("pg_ctl")
        if is_root() and not self.dir.exists():
            self._make_reachable_dir()

    def _make_reachable_dir(self) -> None:
        """The server runs as ``postgres``, which must reach its data directory. When a parent
        of the stack directory is private to root, the data goes under /var/lib/feedstore and
        the stack directory holds a symlink to it."""
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        parent = self.dir.parent.resolve()
        if all(os.stat(p).st_mode & 0o001 for p in (parent, *parent.parents)):
            self.dir.mkdir()
            return
        digest = hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:12]
        target = Path("/var/lib/feedstore") / digest / "postgres"
        target.mkdir(parents=True, exist_ok=True)
        for p in (target.parent, target.parent.parent):
            p.chmod(0o755)
        self.dir.symlink_to(target, target_is_directory=True)

    def _own(self, path: Path) -> None:
        if is_root():
            user = pwd.getpwnam("postgres")
            os.chown(path, user.pw_uid, user.pw_gid)

    def _init_cluster(self) -> None:
        dsn = urlsplit(self.settings.postgres.dsn)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._own(self.dir)
        pwfile = self.dir.resolve() / ".pwfile"
        pwfile.write_text(dsn.password or "")
        self._own(pwfile)
        try:
            result = self._run_as_owner([
                require("initdb"), "-D", str(self.data_dir), "-U", dsn.username or "postgres",
                f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C.UTF-8",
            ])
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"postgres initdb failed: {result.stderr.strip()[-500:]}")

    def start(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self._init_cluster()
        self.log_file.touch()
        self._own(self.log_file)
        options = " ".join(f"-c {k}={v}" for k, v in SERVER_OPTIONS.items())
        options += f" -p {self.settings.postgres.port} -k {self.dir.resolve()}"
        result = self._run_as_owner([
            require("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file.resolve()),
            "-o", options, "-w", "-t", "180", "start",
        ])
        if result.returncode != 0:
            said = " ".join((result.stderr.strip() or result.stdout.strip()).split())[-300:]
            raise StackError(f"postgres failed to start: {said}; see its log: {self.log_file}")

    def _admin_dsn(self) -> str:
        """The same credentials against the always-present ``postgres`` database."""
        return urlsplit(self.settings.postgres.dsn)._replace(path="/postgres").geturl()

    def ready(self) -> bool:
        try:
            with psycopg.connect(self._admin_dsn(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def provision(self) -> None:
        dbname = urlsplit(self.settings.postgres.dsn).path.lstrip("/")
        with psycopg.connect(self._admin_dsn(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run_as_owner([require("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    def endpoint(self) -> str:
        dsn = urlsplit(self.settings.postgres.dsn)
        return dsn._replace(netloc=f"{dsn.username}@{dsn.hostname}:{dsn.port}").geturl()
