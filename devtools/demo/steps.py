"""The step runner: each step's stray output, logging included, goes to a log file of its own,
so the console shows one line per step and a failure points at the file that explains it."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


def first_line(exc: BaseException) -> str:
    """Enough of an error for one console line; the traceback is in the log."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class StepFailed(RuntimeError):
    def __init__(self, step: str, log: Path, cause: BaseException) -> None:
        super().__init__(f"step '{step}' failed: {first_line(cause)}  (log: {log})")
        self.step, self.log, self.cause = step, log, cause


class LogSink(io.TextIOBase):
    """Where stray output goes while the demo runs: the current step's log file."""

    def __init__(self, fallback: IO[str]) -> None:
        self.target: IO[str] | None = None
        self.fallback = fallback
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            (self.target or self.fallback).write(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            (self.target or self.fallback).flush()

    def isatty(self) -> bool:
        return False


class Steps:
    def __init__(self, console: Console, log_dir: Path, sink: LogSink) -> None:
        self.console, self.log_dir, self.sink = console, log_dir, sink
        self.number = 0

    @contextlib.contextmanager
    def step(self, name: str, title: str) -> Iterator[dict[str, str]]:
        """Runs a block with its output in ``NN-name.log``; prints ✓ with a note, or ✗ with the log."""
        self.number += 1
        path = self.log_dir / f"{self.number:02d}-{name}.log"
        note: dict[str, str] = {}
        started = time.monotonic()
        self.console.print(f"[bold cyan]{self.number}.[/] {title}")
        with open(path, "w", buffering=1) as log_file:
            self.sink.target = log_file
            try:
                yield note
            except BaseException as exc:
                traceback.print_exc(file=log_file)
                self._failed(name, path, time.monotonic() - started, exc)
                raise StepFailed(name, path, exc) from exc
            finally:
                self.sink.target = None
        self._done(time.monotonic() - started, note.get("text"))

    def _failed(self, name: str, log: Path, elapsed: float, exc: BaseException) -> None:
        self.console.print(f"   [bold red]✗ {name} failed[/] after {elapsed:.1f}s: {first_line(exc)}",
                           highlight=False, soft_wrap=True)
        self.console.print(f"     log: {log}", highlight=False, soft_wrap=True)

    def _done(self, elapsed: float, note: str | None) -> None:
        text = f"   [green]✓[/] {elapsed:.1f}s"
        if note:
            text += f"  {note}"
        self.console.print(text, highlight=False)


def progress_bar(console: Console) -> Progress:
    # Output is routed to the step logs already; rich must not take sys.stdout/err over.
    return Progress(SpinnerColumn(), TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True, redirect_stdout=False,
                    redirect_stderr=False)


def route_logging(sink: LogSink) -> Callable[[], None]:
    """structlog and the logging module into ``sink`` for the run; returns the undo."""
    from feedstore.logs import configure_logging

    configure_logging(json=True)
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sink), cache_logger_on_first_use=False)
    handlers = [h for h in logging.root.handlers if isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)]
    streams = [h.setStream(sink) for h in handlers]

    def undo() -> None:
        structlog.configure(**saved)
        for h, s in zip(handlers, streams, strict=True):
            h.setStream(s)
    return undo


@contextlib.contextmanager
def routed_output(sink: LogSink) -> Iterator[None]:
    """stdout, stderr and logging into ``sink`` for the run: libraries print, and a step's print
    belongs in that step's log, not between the console's step lines."""
    undo = route_logging(sink)
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            yield
    finally:
        undo()
