from __future__ import annotations

import pytest

from ingestion.sinks.base import UserCounters
from ingestion.sinks.feast_push import COLUMNS, realtime_frame

pytestmark = pytest.mark.pure


def test_realtime_frame_has_the_contract_columns_and_types():
    frame = realtime_frame([UserCounters(7, 3, 1200, 42, "like", 1_772_366_400_000)])
    assert tuple(frame.columns) == COLUMNS
    assert str(frame["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["user_id"].dtype == "int64" and frame["rt_last_item_id"].dtype == "int64"
    row = frame.iloc[0]
    assert (row.user_id, row.rt_interactions_1h, row.rt_dwell_ms_1h, row.rt_last_event_type) == (7, 3, 1200, "like")
