"""Where validated events land. Every sink follows ``ingestion.sinks.base``: one ``write(batch)``,
idempotent for a batch so that the consumer can retry a stage (or a whole batch after a crash)
without doubling anything, raising ``StoreUnavailable`` for failures that waiting may cure and
``PermanentSinkError`` for those it cannot."""

from ingestion.sinks.base import (
    BatchingSink,
    DeadLetter,
    OffsetRange,
    PermanentSinkError,
    SinkBatch,
    SinkError,
    StoreUnavailable,
)

__all__ = ["BatchingSink", "DeadLetter", "OffsetRange", "PermanentSinkError", "SinkBatch", "SinkError",
           "StoreUnavailable"]
