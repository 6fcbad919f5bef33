"""A 30-day backfill of the daily job on tiny data, oldest partition first as a Dagster backfill
runs it: every run succeeds and every blocking check passes, the online check included (for the
old days, whose rows are past their TTL or superseded, it checks exactly that), and no run leaves
a Postgres connection open."""

from __future__ import annotations

import os
import time as clock
from datetime import datetime, time, timedelta, timezone

import pytest

from tests.orchestration.conftest import TinyFeed, load_feed, pipeline_connections

DAYS = 30


@pytest.fixture(scope="module")
def month(stack):
    import psycopg

    from devtools.sandbox import sandbox
    from devtools.synthetic import generator as gen

    today = datetime.now(timezone.utc).date()
    days = [today - timedelta(days=n) for n in range(DAYS, 0, -1)]
    with sandbox("backfill") as settings:
        spec = gen.spec_for("tiny", seed=5, end=datetime.combine(today, time(0), tzinfo=timezone.utc), days=DAYS)
        feed = TinyFeed(days=days, users=gen.users_table(spec).to_pandas(), items=gen.items_table(spec).to_pandas(),
                        events=gen.events_table(spec).to_pandas(), landed_rows={}, spec=spec)
        with psycopg.connect(settings.postgres.dsn) as conn:
            load_feed(feed, settings, conn)
        yield settings, feed


def _step_failures(result) -> dict[str, str]:
    """Each failed step's error, so a red day says why in the assertion."""
    return {e.step_key: e.step_failure_data.error.to_string() if e.step_failure_data.error else ""
            for e in result.all_events if e.is_step_failure}


def _timed_out(failures: dict[str, str]) -> bool:
    """pytest-timeout's signal lands in whichever step runs, and Dagster records it as that step's
    failure and returns: without this the hour running out read as the last day's step error."""
    return any("Timeout" in error and "pytest-timeout" in error for error in failures.values())


def _failed(evaluation) -> tuple[str, str | None, dict]:
    """A failed check with what it reported (its description and metadata values)."""
    return (evaluation.check_name, evaluation.description,
            {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()})


@pytest.mark.nightly  # 30 runs, ~12 min alone on two cores: ./run test -m nightly
@pytest.mark.timeout(3600)
def test_thirty_day_backfill_is_green(month):
    import dagster as dg

    from orchestration import lake
    from orchestration.definitions import defs

    settings, feed = month
    job = defs.get_job_def("daily_pipeline")
    instance = dg.DagsterInstance.ephemeral()
    outcomes, left_open = {}, {}
    started = clock.monotonic()
    for day in feed.days:
        result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False)
        checks = result.get_asset_check_evaluations()
        outcomes[day] = (result.success, [_failed(e) for e in checks if not e.passed],
                         len(checks), _step_failures(result))
        if _timed_out(outcomes[day][3]):
            pytest.fail(f"pytest-timeout fired during the run of {day} ({len(outcomes)} of {DAYS} days, "
                        f"{clock.monotonic() - started:.0f} s, load {os.getloadavg()[0]:.1f}): the backfill "
                        "did not fit its time on this machine; that day's run is not a result")
        left_open[day] = pipeline_connections(settings)
        print(f"{datetime.now(timezone.utc):%H:%M:%S} {day} success={result.success} {outcomes[day][1:]}", flush=True)
    failed = {d: o for d, o in outcomes.items() if not o[0] or o[1]}
    assert failed == {}, failed
    assert set(left_open.values()) == {0}, left_open  # every run gave its Postgres connections back
    assert all(n >= 12 for _, _, n, _ in outcomes.values())
    assert lake.partition_days(f"{lake.TRAINING}/ranking_daily", settings) == feed.days
