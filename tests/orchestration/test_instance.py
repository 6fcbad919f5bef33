"""``feedstore dagster``'s instance: dagster.yaml written once and left alone, and a SIGTERM that
stops the whole ``dagster dev`` tree even when started from a background shell (SIGINT ignored)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from devtools.stack.tools import require
from orchestration.instance import prepare_home
from tests.conftest import free_port
from tests.orchestration.conftest import postgres_home


@pytest.mark.pure
def test_dagster_yaml_is_written_once_and_then_left_alone(tmp_path):
    from feedstore.settings import Settings

    home = prepare_home(tmp_path, Settings.defaults())
    path = home / "dagster.yaml"
    assert yaml.safe_load(path.read_text())["telemetry"] == {"enabled": False}
    edited = path.read_text() + "retention:\n  schedule:\n    purge_after_days: 7\n"
    path.write_text(edited)
    prepare_home(tmp_path, Settings.defaults().replace(pipeline={"dagster_storage_dsn": "postgresql://x/y"}))
    assert path.read_text() == edited


def _group_alive(pgid: int) -> bool:
    """Any process of the group still running (killed ones may stay zombies a moment, unreaped)."""
    for _ in range(20):
        states = subprocess.run([require("ps"), "-o", "stat=", "-g", str(pgid)], capture_output=True,
                                text=True).stdout.split()
        if all(s.startswith("Z") for s in states):
            return False
        time.sleep(0.5)
    return True


def test_sigterm_stops_dagster_dev_and_its_processes(settings, tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "FEED_PIPELINE_SHUTDOWN_GRACE_SECONDS": "5"}
    log = (tmp_path / "dagster.log").open("wb")
    # As a background job of a non-interactive shell starts it: SIGINT ignored.
    proc = subprocess.Popen([str(Path(sys.executable).parent / "feedstore"), "dagster", "-p", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "dagster.log").read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "dagster dev did not answer"
            time.sleep(1)
        children = subprocess.run([require("ps"), "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                                  text=True)
        (dev,) = [int(p) for p in children.stdout.split()]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) in (0, 128 + signal.SIGTERM)
        assert not _group_alive(dev), "dagster dev's processes outlived it"
        with pytest.raises(requests.RequestException):
            requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


DAGSTER_REFUSED = ["SELECT count(*) FROM public.user_activity", "SELECT * FROM public.users",
                   "DELETE FROM public.items", "INSERT INTO public.feast_metadata VALUES ('p', 'k', 'v', 0)",
                   "CREATE TABLE public.x (a int)", "CREATE TEMP TABLE t (a int)", "CREATE SCHEMA other",
                   "SELECT public.drop_activity_partitions('2000-01-01', '2000-02-01')",
                   "SELECT public.ensure_activity_partitions(current_date, current_date)",
                   "DROP SCHEMA dagster CASCADE"]


def test_dagster_storage_in_postgres_is_its_own_login_in_its_own_schema(settings, pg, tmp_path):
    """dagster-postgres creates its run, event-log and schedule tables as feedstore_dagster_app in
    schema ``dagster`` (made by migrate); that login is no superuser and may read, change or create
    nothing of feedstore's."""
    import psycopg
    from dagster import DagsterInstance
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
    from sqlalchemy import text

    with DagsterInstance.from_config(str(postgres_home(settings, tmp_path))) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        with instance.run_storage.connect() as conn:
            row = conn.execute(text("SELECT current_user, current_setting('application_name'), current_schema()"))
            assert tuple(row.one()) == ("feedstore_dagster_app", "feedstore-dagster", "dagster")
        runs = len(instance.get_runs())  # other tests of the session may have recorded some
    tables = dict(pg.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'dagster'").fetchall())
    assert {"runs", "event_logs", "jobs", "instance_info", "alembic_version"} <= set(tables), tables
    assert set(tables.values()) == {"feedstore_dagster_app"}, tables
    assert pg.execute("SELECT count(*) FROM pg_tables WHERE schemaname <> 'dagster' AND tablename IN "
                      "('runs', 'event_logs', 'jobs')").fetchone() == (0,)
    with psycopg.connect(settings.dagster_login_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                            "WHERE rolname = current_user").fetchone() == (False, False, False)
        for statement in DAGSTER_REFUSED:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (runs,)  # the instance's, on its search_path
