"""The seam to Feast's online store: realtime user features pushed to ``user_realtime_push``.

Enabled by ``FEED_INGEST_FEAST_PUSH=true`` once ``feature_repo/`` has been applied. Feast costs ~3 ms
per ``push`` call whatever its size, so the consumer pushes one DataFrame per batch, ONLINE
only (an OFFLINE push rewrites the whole Parquet file each call).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from feedstore.contract.features import USER_REALTIME
from feedstore.settings import Settings
from ingestion.sinks.base import BatchingSink, PermanentSinkError, SinkBatch, StoreUnavailable, UserCounters

PUSH_SOURCE = USER_REALTIME.push_source
COLUMNS = ("user_id", "event_timestamp", "rt_interactions_1h", "rt_dwell_ms_1h", "rt_last_item_id",
           "rt_last_event_type")


def realtime_frame(counters: Sequence[UserCounters]) -> pd.DataFrame:
    """The ``user_realtime_features`` columns of the feature contract, one row per user."""
    frame = pd.DataFrame({
        "user_id": pd.array([c.user_id for c in counters], dtype="int64"),
        "event_timestamp": pd.to_datetime([c.last_activity_ms for c in counters], unit="ms", utc=True),
        "rt_interactions_1h": pd.array([c.total_events for c in counters], dtype="int64"),
        "rt_dwell_ms_1h": pd.array([c.total_dwell_ms for c in counters], dtype="int64"),
        "rt_last_item_id": pd.array([c.last_item_id for c in counters], dtype="int64"),
        "rt_last_event_type": pd.array([c.last_event_type for c in counters], dtype="object"),
    })
    return frame[list(COLUMNS)]


class FeastPushSink(BatchingSink):
    name = "feast"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store = None

    def _feature_store(self):
        if self._store is None:
            from feedstore.feast.store import store

            self._store = store(self.settings)
        return self._store

    def write(self, batch: SinkBatch) -> None:
        counters = batch.counters
        if not counters:
            return
        from feast.data_source import PushMode

        try:
            self._feature_store().push(PUSH_SOURCE, realtime_frame(counters), to=PushMode.ONLINE)
        except Exception as exc:  # noqa: BLE001 - Feast surfaces store errors under many types
            if _refused(exc):
                raise PermanentSinkError(self.name, exc) from exc
            raise StoreUnavailable(self.name, exc) from exc


def _refused(exc: BaseException) -> bool:
    """Redis's ACL refusals (NOPERM, WRONGPASS, NOAUTH) and unknown push sources do not pass."""
    import redis

    text = str(exc)
    return isinstance(exc, (redis.exceptions.NoPermissionError, redis.exceptions.AuthenticationError)) or \
        "no permissions" in text or "NOPERM" in text or "WRONGPASS" in text or \
        type(exc).__name__ in ("PushSourceNotFoundException", "FeatureViewNotFoundException")
