"""Daily UTC partitions, shared by every asset, and the mappings onto the windows they read."""

from __future__ import annotations

from datetime import date

import dagster as dg

from feedstore.settings import get_settings

# Dagster fixes partitions when the code location loads, so the start date is read then.
daily = dg.DailyPartitionsDefinition(start_date=get_settings().pipeline.first_partition(), timezone="UTC")


def window(days: int) -> dg.TimeWindowPartitionMapping:
    """The partition and the ``days - 1`` before it (history before the start date is simply absent)."""
    return dg.TimeWindowPartitionMapping(start_offset=-(days - 1), end_offset=0,
                                         allow_nonexistent_upstream_partitions=True)


previous_day = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1,
                                             allow_nonexistent_upstream_partitions=True)


def partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)
