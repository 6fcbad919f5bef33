-- Dagster's own storage (runs, event log, schedules) when it is kept in Postgres (docker compose):
-- schema `dagster`, where the group role `feedstore_dagster` may create its tables. It gets no
-- grant on anything else, and `migrate` makes its login (feedstore_dagster_app) with
-- search_path = dagster, so Dagster's unqualified tables land there.
DO $$
BEGIN
    BEGIN
        CREATE ROLE feedstore_dagster NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- roles are cluster-wide; another database may have made it
    END;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO feedstore_dagster', current_database());
END;
$$;
CREATE SCHEMA dagster;
GRANT USAGE, CREATE ON SCHEMA dagster TO feedstore_dagster;
