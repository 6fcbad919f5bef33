"""PostgreSQL 15 from Debian's binaries, in a cluster of its own under the stack directory."""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from devtools.stack.base import Service, StackError, is_root
from devtools.stack.tools import require
from feedstore.settings import _with_user

# Objects of an older database, made by the superuser, handed to the owner role.
_HAND_OVER = """
DO $$
DECLARE
    obj RECORD;
BEGIN
    FOR obj IN
        SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND pg_get_userbyid(c.relowner) <> current_setting('feedstore.owner')
          AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
    LOOP
        EXECUTE format('ALTER %s %I OWNER TO %I',
                       CASE obj.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                            WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                       obj.relname, current_setting('feedstore.owner'));
    END LOOP;
    FOR obj IN
        SELECT p.oid::regprocedure AS sig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> current_setting('feedstore.owner')
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO %I', obj.sig, current_setting('feedstore.owner'));
    END LOOP;
END;
$$;
"""

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
        stack = self.settings.stack
        self.dir.mkdir(parents=True, exist_ok=True)
        self._own(self.dir)
        pwfile = self.dir.resolve() / ".pwfile"
        pwfile.write_text(stack.postgres_admin_password)
        self._own(pwfile)
        try:
            result = self._run_as_owner([
                require("initdb"), "-D", str(self.data_dir), "-U", stack.postgres_admin_user,
                f"--pwfile={pwfile}", "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
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

    def admin_dsn(self, database: str = "postgres") -> str:
        """The cluster's superuser on the owner DSN's server."""
        stack = self.settings.stack
        url = _with_user(self.settings.postgres.dsn, stack.postgres_admin_user, stack.postgres_admin_password,
                         application_name="feedstore-stack")
        return urlsplit(url)._replace(path=f"/{database}").geturl()

    def ready(self) -> bool:
        try:
            with psycopg.connect(self.admin_dsn(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def provision(self) -> None:
        """The owner role (password from the owner DSN) and its database; an older database made by
        the superuser is handed over to it. ``migrate`` (as the owner) makes the other roles."""
        dsn = urlsplit(self.settings.postgres.dsn)
        dbname, owner = dsn.path.lstrip("/"), unquote(dsn.username or "")
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            self._close_trust(conn)
            if owner and owner != self.settings.stack.postgres_admin_user:
                self._ensure_owner_role(conn, owner, unquote(dsn.password or ""))
            row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                               (dbname,)).fetchone()
            if row is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(dbname), sql.Identifier(owner or self.settings.stack.postgres_admin_user)))
            elif owner and row[0] != owner:
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(dbname),
                                                                            sql.Identifier(owner)))
                with psycopg.connect(self.admin_dsn(dbname), autocommit=True) as db:
                    db.execute("SELECT set_config('feedstore.owner', %s, false)", (owner,))
                    db.execute(_HAND_OVER)

    def _ensure_owner_role(self, conn: psycopg.Connection, owner: str, password: str) -> None:
        """CREATEROLE so that ``migrate`` can make the components' users (on PostgreSQL 15 that is
        broad: the README says how to make them by hand instead). Altered only when its DSN
        cannot log in, since concurrent sandboxes provision at once."""
        attrs = sql.SQL("LOGIN CREATEROLE NOSUPERUSER NOCREATEDB NOREPLICATION NOBYPASSRLS")
        if password:
            attrs += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone()
        if exists and self._owner_logs_in():
            return
        verb = "ALTER ROLE" if exists else "CREATE ROLE"
        try:
            conn.execute(sql.SQL(verb + " {} {}").format(sql.Identifier(owner), attrs))
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation, psycopg.errors.InternalError):
            pass  # made or changed by a concurrent provision

    def _owner_logs_in(self) -> bool:
        try:
            psycopg.connect(urlsplit(self.settings.postgres.dsn)._replace(path="/postgres").geturl(),
                            connect_timeout=5).close()
            return True
        except psycopg.OperationalError:
            return False

    def _close_trust(self, conn: psycopg.Connection) -> None:
        """No ``trust`` line in pg_hba.conf (clusters made before it were trusted on the socket)."""
        if not conn.execute("SELECT 1 FROM pg_hba_file_rules WHERE auth_method = 'trust'").fetchone():
            return
        path = Path(conn.execute("SHOW hba_file").fetchone()[0])
        try:
            lines = [re.sub(r"\btrust\s*$", "scram-sha-256", line) if not line.lstrip().startswith("#") else line
                     for line in path.read_text().splitlines()]
            path.write_text("\n".join(lines) + "\n")
        except OSError:
            return  # not this machine's file (a container's): its initdb arguments decide
        conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run_as_owner([require("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    def endpoint(self) -> str:
        dsn = urlsplit(self.settings.postgres.dsn)
        return dsn._replace(netloc=f"{dsn.username}@{dsn.hostname}:{dsn.port}", query="").geturl()
