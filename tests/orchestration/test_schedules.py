"""The shipped schedules keep every batch view live: four days of tiny events, the daily and
midday schedules ticked through Dagster's own evaluation on a frozen clock, each run executed in
process (landing its budget after its tick), and the online store read at every hour and
half-hour in between. For every entity that keeps having rows, no read finds it dark and no
served value is older than its refresh allows (nor its TTL); the freshness figures agree.

The simulated days lie ahead of the real clock, so Redis (which expires keys on its own clock)
keeps every key the frozen clock still considers live; reads judge the TTL on the frozen clock."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pandas as pd
import pytest

from feedstore.contract.features import BATCH_VIEWS, RUN_BUDGET, VIEWS
from tests.orchestration.conftest import TinyFeed, load_feed

SIM_DAYS = 4
STEP = timedelta(minutes=30)
SAMPLE = 80


@pytest.fixture(scope="module")
def sim(stack):
    """A namespace of its own, with four tiny days starting three days from now."""
    import psycopg

    from devtools.sandbox import sandbox
    from devtools.synthetic import generator as gen

    first = datetime.now(timezone.utc).date() + timedelta(days=3)
    days = [first + timedelta(days=i) for i in range(SIM_DAYS)]
    with sandbox("schedules") as settings:
        end = datetime.combine(days[-1] + timedelta(days=1), time(0), tzinfo=timezone.utc)
        spec = gen.spec_for("tiny", seed=11, end=end, days=SIM_DAYS)
        feed = TinyFeed(days=days, users=gen.users_table(spec).to_pandas(), items=gen.items_table(spec).to_pandas(),
                        events=gen.events_table(spec).to_pandas(), landed_rows={}, spec=spec)
        with psycopg.connect(settings.postgres.dsn) as conn:
            load_feed(feed, settings, conn)
        yield settings, feed


def _ticks(defs, start: datetime, end: datetime) -> list[tuple[datetime, str]]:
    """Every tick of the shipped schedules in ``[start, end)``, through Dagster's cron iterator."""
    from dagster._utils.schedules import cron_string_iterator

    ticks = []
    for schedule in defs.schedules:
        resolved = defs.get_schedule_def(schedule.name)
        for at in cron_string_iterator(start.timestamp(), resolved.cron_schedule, resolved.execution_timezone or "UTC"):
            if at >= end:
                break
            ticks.append((at.astimezone(timezone.utc), schedule.name))
    return sorted(ticks)


def _samples(feed: TinyFeed) -> dict[str, list[int]]:
    views = feed.events[feed.events.event_type == "view"].item_id.value_counts()
    return {"user": sorted(feed.users.user_id.astype(int))[:SAMPLE], "item": [int(i) for i in views.index[:SAMPLE]]}


def _read(store, view: str, key: str, ids: list[int]) -> tuple[list[bool], list[int]]:
    spec = VIEWS[view]
    got = store.get_online_features(features=[f"{view}:{spec.columns[0]}"],
                                    entity_rows=[{key: i} for i in ids]).to_dict(include_event_timestamps=True)
    values, stamps = got[spec.columns[0]], got[f"{spec.columns[0]}__ts"]
    return [v is not None for v in values], [int(s or 0) for s in stamps]


def _stable(view: str, days: list[date], settings) -> set[int]:
    """Entities with a row in every partition of the view that landed: they always have a value."""
    from orchestration import lake

    key = VIEWS[view].entity.join_key
    sets = [set(lake.read_table(lake.feature_prefix(view, d), settings, [key]).column(key).to_pylist()) for d in days]
    return set.intersection(*sets)


def test_no_view_goes_dark_under_the_shipped_schedules(sim):
    import dagster as dg
    import redis

    from feedstore.feast import freshness
    from feedstore.feast.online import layout
    from orchestration.definitions import defs
    from orchestration.resources import FeastResource

    settings, feed = sim
    start = datetime.combine(feed.days[0] + timedelta(days=1), time(0), tzinfo=timezone.utc)
    end = start + timedelta(days=SIM_DAYS)
    ticks = _ticks(defs, start, end)
    assert sum(name == "daily_pipeline_schedule" for _, name in ticks) == SIM_DAYS
    assert sum(name == "candidates_refresh_schedule" for _, name in ticks) == SIM_DAYS
    landings = sorted((at + RUN_BUDGET, at, name) for at, name in ticks)
    instance = dg.DagsterInstance.ephemeral()
    samples = _samples(feed)
    client = redis.Redis.from_url(settings.redis.url)
    clock = {"now": start}
    reads: list[dict] = []
    runs: list[tuple[str, str, bool, list[str]]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(layout, "now_micros", lambda: int(clock["now"].timestamp() * 1_000_000))
        feast = FeastResource()
        store = feast.store()
        moment = landings[0][0]
        while moment < end:
            while landings and landings[0][0] <= moment:
                landed, tick, name = landings.pop(0)
                clock["now"] = landed
                # Dagster's own notion of now (which partitions exist) frozen with ours
                with dg.partition_loading_context(effective_dt=landed):
                    request = defs.get_schedule_def(name).evaluate_tick(
                        dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)).run_requests[0]
                    result = defs.get_job_def(request.job_name).execute_in_process(
                        partition_key=request.partition_key, instance=instance, raise_on_error=False)
                failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
                runs.append((name, request.partition_key, result.success, failed))
                store.refresh_registry()
            clock["now"] = moment
            for view in BATCH_VIEWS:
                key = VIEWS[view].entity.join_key
                present, stamps = _read(store, view, key, samples[VIEWS[view].entity.name])
                reads += [{"moment": moment, "view": view, "id": i, "present": p, "ts": s}
                          for i, p, s in zip(samples[VIEWS[view].entity.name], present, stamps, strict=True)]
            for f in freshness.freshness(client, store.project):
                if f.view in BATCH_VIEWS:
                    reads.append({"moment": moment, "view": f.view, "id": -1, "present": f.newest is not None,
                                  "ts": int(f.newest.timestamp()) if f.newest else 0})
            moment += STEP
        feast.close()
    assert [r for r in runs if not r[2] or r[3]] == [], runs
    frame = pd.DataFrame(reads)
    assert frame.moment.min() == landings_start(ticks) and frame.moment.max() >= end - STEP
    for view in BATCH_VIEWS:
        spec = VIEWS[view]
        stable = _stable(view, feed.days, settings) & set(samples[spec.entity.name])
        assert len(stable) >= 10, view
        mine = frame[(frame.view == view) & frame.id.isin(stable | {-1})]
        dark = mine[~mine.present]
        assert dark.empty, (view, dark.head(5).to_dict("records"))
        age = mine.moment.map(lambda t: t.timestamp()) - mine.ts
        assert age.max() <= spec.refresh.worst_age.total_seconds(), (view, age.max() / 3600)
        assert age.max() < spec.ttl.total_seconds()


def landings_start(ticks) -> datetime:
    return min(at for at, _ in ticks) + RUN_BUDGET
