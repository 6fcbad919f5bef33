"""The generator's ``tiny`` feed over three days, loaded into the session's isolated namespace:
users and the catalog through ``devtools.synthetic.seeding`` (Postgres plus the content-embedding
snapshot on S3), every event in Postgres, and the last two days also as landed consumer files
(with replayed duplicates); the first day only in Postgres, as the seed's history is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devtools.synthetic import generator as gen
from feedstore.contract.events import EVENT_SCHEMA
from feedstore.s3 import arrow_fs, bucket_path

SCALE, SEED, DAYS = "tiny", 7, 3


@dataclass
class TinyFeed:
    days: list[date]
    users: pd.DataFrame
    items: pd.DataFrame
    events: pd.DataFrame          # unique events, all days
    landed_rows: dict[date, int]  # rows in the landed files, duplicates included
    spec: gen.GenerationSpec


def make_feed(today: date) -> TinyFeed:
    """Three days of events ending at the start of ``today`` (UTC)."""
    spec = gen.spec_for(SCALE, seed=SEED, end=datetime.combine(today, time(0), tzinfo=timezone.utc), days=DAYS)
    days = [today - timedelta(days=n) for n in range(DAYS, 0, -1)]
    return TinyFeed(days=days, users=gen.users_table(spec).to_pandas(), items=gen.items_table(spec).to_pandas(),
                    events=gen.events_table(spec).to_pandas(), landed_rows={}, spec=spec)


def _event_table(frame: pd.DataFrame) -> pa.Table:
    frame = frame.assign(dwell_time_ms=frame["dwell_time_ms"].astype("Int32"))
    return pa.Table.from_pandas(frame[EVENT_SCHEMA.names], schema=EVENT_SCHEMA, preserve_index=False)


def load_events(events: pa.Table, conn) -> None:
    from devtools.synthetic.seeding import activity_rows, copy_rows

    with conn.cursor() as cur:
        copy_rows(cur, "user_activity", activity_rows(events))
    conn.commit()


def load_feed(feed: TinyFeed, settings, conn) -> None:
    from devtools.synthetic.seeding import generate

    generate(feed.spec, settings, events_to="none")
    conn.execute("SELECT ensure_activity_partitions(%s, %s)", (feed.days[0], feed.days[-1]))
    load_events(_event_table(feed.events), conn)
    fs = arrow_fs(settings)
    for day in feed.days[1:]:
        frame = feed.events[feed.events.timestamp.dt.date == day]
        replay = frame.sample(n=40, random_state=1)
        landed = pd.concat([frame, replay], ignore_index=True)
        for hour, part in landed.groupby(landed.timestamp.dt.hour):
            half = len(part) // 2
            for i, chunk in enumerate((part.iloc[:half], part.iloc[half:])):
                key = f"events/dt={day}/hour={hour:02d}/user-activity-0-{hour * 10 + i}-{hour * 10 + i}.parquet"
                pq.write_table(_event_table(chunk), bucket_path(key, settings), filesystem=fs)
        feed.landed_rows[day] = len(landed)


@pytest.fixture(scope="session")
def tiny_feed(settings) -> TinyFeed:
    import psycopg

    feed = make_feed(datetime.now(timezone.utc).date())
    with psycopg.connect(settings.postgres.dsn) as conn:
        load_feed(feed, settings, conn)
    return feed


def materialize(day: date, selection: list[str] | None = None, run_config: dict | None = None,
                raise_on_error: bool = True, instance=None):
    """Run assets (and their blocking checks) for one partition in process, as a job would
    (on an ephemeral Dagster instance unless one is given)."""
    import dagster as dg

    from orchestration.definitions import ASSETS, CHECKS
    from orchestration.resources import resources

    return dg.materialize(
        [*ASSETS, *CHECKS], partition_key=day.isoformat(), resources=resources(),
        selection=dg.AssetSelection.assets(*selection) if selection else None,
        run_config=run_config, raise_on_error=raise_on_error, instance=instance,
    )


def postgres_home(settings, home):
    """A ``dagster.yaml`` keeping Dagster's storage in the namespace's database, as compose does."""
    from orchestration.instance import prepare_home

    return prepare_home(home, settings.replace(pipeline={"dagster_storage_dsn": settings.dagster_login_dsn}))


def pipeline_connections(settings) -> int:
    """Connections the pipeline's role holds on the namespace's database (besides this one)."""
    pipeline = settings.as_component("pipeline").postgres.dsn
    user, db = urlsplit(pipeline).username, urlsplit(pipeline).path.lstrip("/")
    import psycopg

    with psycopg.connect(settings.postgres.dsn) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = %s "
                            "AND pid <> pg_backend_pid()",
                            (db, user)).fetchone()[0]


BATCH_ASSETS = ["activity_archive", "item_catalog_snapshot", "user_profile_snapshot", "user_activity_features",
                "item_engagement_features", "item_embeddings", "user_embeddings", "user_candidates",
                "user_realtime_features"]


@pytest.fixture(scope="session")
def pipeline(tiny_feed: TinyFeed) -> dict:
    """The archive, snapshots and features of every tiny day, materialised once per session."""
    results = {}
    for day in tiny_feed.days:
        results[day] = materialize(day, BATCH_ASSETS)
    return results
