"""Every program outside the virtual environment that the project or its tests run, in one
list, each with the Debian package that provides it.

``require(name)`` returns a program's path and installs its package on first use, so a fresh
machine needs nothing by hand. Programs inside the virtual environment (``dagster``, ``feast``,
``weed``) are found with ``venv_program`` next to ``sys.executable``, never on ``PATH``.
``./run`` itself needs only ``python3`` (3.11 or 3.12) and installs Debian's ``python3-venv``
when the interpreter lacks ``ensurepip``; that happens before this module can be imported.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from devtools.stack.base import StackError, apt_install

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class Tool:
    name: str
    package: str
    used_by: str
    dirs: tuple[Path, ...] = ()

    def find(self) -> str | None:
        for d in self.dirs:
            if (d / self.name).is_file():
                return str(d / self.name)
        return shutil.which(self.name)


TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("initdb", "postgresql-15", "stack: PostgreSQL cluster", (PG_BIN,)),
    Tool("pg_ctl", "postgresql-15", "stack: PostgreSQL server", (PG_BIN,)),
    Tool("psql", "postgresql-client-15", "tests; users after `stack env`"),
    Tool("redis-server", "redis-server", "stack: Redis; bench"),
    Tool("redis-cli", "redis-tools", "tests; users after `stack env`"),
    Tool("java", "openjdk-17-jre-headless", "stack: Kafka broker"),
    Tool("mvn", "maven", "stack: fetches the Kafka jars from Maven Central"),
    Tool("kcat", "kcat", "tests; users after `stack env`"),
    Tool("chromium", "chromium", "tests: the Dagster and Feast UIs in a browser"),
    Tool("runuser", "util-linux", "stack: initdb/pg_ctl as the postgres user when run as root"),
    Tool("bash", "bash", "tests: `stack env` evaluated as a user would"),
    Tool("apt-get", "apt", "installs the packages of this list (as root)"),
    Tool("apt-cache", "apt", "tests: every package of this list exists"),
    Tool("prometheus", "prometheus", "stack --monitoring: scrapes the consumer, the feature server and the "
         "pipeline exporter (Debian's package; a systemd host also starts its own on :9090, ours is apart)"),
    Tool("promtool", "prometheus", "tests: `promtool check rules` and `promtool test rules` on ops/prometheus/"),
    Tool("ps", "procps", "tests: which processes `feedstore dagster` leaves behind"),
    Tool("git", "git", "training sets record the code version (optional: 'unknown' without it)"),
)}


def require(name: str) -> str:
    """The program's path, installing its Debian package when it is missing."""
    tool = TOOLS.get(name)
    if tool is None:
        raise KeyError(f"{name} is not in devtools.stack.tools.TOOLS: add it there")
    path = tool.find()
    if path is None:
        apt_install(tool.package)
        path = tool.find()
    if path is None:
        raise StackError(f"{name}: installed {tool.package}, but {name} is still not found")
    return path


def venv_program(name: str) -> str:
    """A console script of this environment, found beside the running interpreter so that it
    works whether or not ``.venv/bin`` is on ``PATH``."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        raise StackError(f"`{name}` is missing from {path.parent}: run ./run once to install the environment")
    return str(path)
