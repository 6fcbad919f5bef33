"""Resources give back what they open: a run that uses the Feast store leaves no Postgres
connection behind (the shared server allows 200 in all, and a backfill is many runs); and a run's
connections are the pipeline's login, seen so by Postgres while the run goes on."""

import threading
import time

import dagster as dg
import psycopg

from orchestration.resources import FeastResource
from tests.orchestration.conftest import materialize, pipeline_connections, postgres_home


def test_runs_using_the_feast_store_leave_no_connection_open(settings):
    @dg.asset
    def reads_the_registry(feast: FeastResource) -> None:
        store = feast.store()
        assert store is feast.store()  # one store per execution
        assert store.get_feature_view("item_embedding").ttl is not None

    before = pipeline_connections(settings)
    for _ in range(3):
        assert dg.materialize([reads_the_registry], resources={"feast": FeastResource()}).success
    assert pipeline_connections(settings) == before


def test_a_closed_store_holds_no_connection(settings):
    from feedstore.feast.store import close, store

    before = pipeline_connections(settings)
    fs = store(settings.as_component("pipeline"))
    fs.list_feature_views()
    assert pipeline_connections(settings) > before
    close(fs)
    assert pipeline_connections(settings) == before


_BACKENDS = ("SELECT a.pid, a.usename, a.application_name, r.rolsuper, "
             "EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted) "
             "FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid "
             "WHERE a.datname = current_database() AND a.pid <> ALL(%s)")
"""Others' sessions show the owner their user and application_name but not their wait events (nor
backend_type): pg_locks says who waits; server processes have no user and drop out of the join."""


def _watch_while_held(settings, table: str, started: threading.Event, done: threading.Event,
                      seen: dict[int, tuple], waiting: list[int]) -> None:
    """Holds ``table`` locked so that the run's query on it waits, and samples pg_stat_activity
    (every backend of the database opened since) until one waits on the lock or the run is over;
    then lets go."""
    with psycopg.connect(settings.postgres.dsn) as lock, psycopg.connect(settings.postgres.dsn,
                                                                          autocommit=True) as watch:
        lock.execute(psycopg.sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(psycopg.sql.Identifier(table)))
        before = [row[0] for row in watch.execute("SELECT pid FROM pg_stat_activity")]
        started.set()
        try:
            deadline = time.monotonic() + 300
            while not waiting and not done.is_set() and time.monotonic() < deadline:
                for pid, user, application, superuser, on_lock in watch.execute(_BACKENDS, (before,)):
                    seen[pid] = (user, application, superuser)
                    if on_lock:
                        waiting.append(pid)
                time.sleep(0.1)
        finally:
            lock.rollback()


def test_a_running_asset_is_seen_under_the_pipelines_login(settings, tiny_feed, tmp_path):
    """A real asset run (user_profile_snapshot, which reads users and user_follows) on a Postgres-backed
    instance, held mid-query on a lock this test takes: every connection of the run is the pipeline's
    login with its application_name, or Dagster's storage login; none a superuser or the owner."""
    started, done = threading.Event(), threading.Event()
    seen: dict[int, tuple] = {}
    waiting: list[int] = []
    watcher = threading.Thread(target=_watch_while_held,
                               args=(settings, "user_follows", started, done, seen, waiting))
    with dg.DagsterInstance.from_config(str(postgres_home(settings, tmp_path))) as instance:
        watcher.start()
        try:
            assert started.wait(120)
            result = materialize(tiny_feed.days[-1], ["user_profile_snapshot"], instance=instance)
        finally:
            done.set()
            watcher.join()
        assert result.success
        assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.SUCCESS]
    assert len(waiting) == 1 and seen[waiting[0]] == ("feedstore_pipeline_app", "feedstore-pipeline", False), seen
    assert set(seen.values()) <= {("feedstore_pipeline_app", "feedstore-pipeline", False),
                                  ("feedstore_dagster_app", "feedstore-dagster", False)}, seen
