"""Structured logging for every process: JSON lines when not on a terminal, readable ones when on.

The standard library's records (uvicorn, Feast, Great Expectations) go through the same
renderer, so a long-running process writes one format whatever library is speaking."""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_configured = False


def configure_logging(level: str | None = None, json: bool | None = None) -> None:
    """The first call sets the format; a later call with an explicit ``level`` or ``json``
    (a command's ``--log-level``) sets it again, before anything has logged."""
    global _configured
    if _configured and level is None and json is None:
        return
    level = (level or "INFO").upper()
    json = (not sys.stderr.isatty()) if json is None else json
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level, stamp,
                           structlog.processors.format_exc_info]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Great Expectations logs every type it registers on import; its warnings are what matters.
    logging.getLogger("great_expectations").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    configure_logging()
    return structlog.get_logger(name)
