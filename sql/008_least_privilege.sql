-- Least privilege. Login users are made by `feedstore migrate` from the configured DSNs and
-- granted these group roles (NOLOGIN):
--   feedstore_ingest  the consumer        feedstore_batch   the daily pipeline
--   feedstore_serve   the feature server  feedstore_reader  read-only
-- The database owner (the migrating role) owns every object; no runtime role may create any.
DO $$
BEGIN
    BEGIN
        CREATE ROLE feedstore_serve NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- roles are cluster-wide; another database may have made it
    END;
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO feedstore_serve', current_database());
END;
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO feedstore_serve;

-- Where partitions may be created and dropped, relative to the current UTC day. `migrate`
-- writes it from settings (FEED_POSTGRES_PARTITION_DAYS_BACK/_AHEAD/_KEEP); only the owner can.
CREATE TABLE activity_partition_window (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    days_back  INTEGER NOT NULL CHECK (days_back >= 0),
    days_ahead INTEGER NOT NULL CHECK (days_ahead >= 0),
    days_kept  INTEGER NOT NULL CHECK (days_kept >= 1)
);
INSERT INTO activity_partition_window VALUES (true, 60, 8, 2);

-- A day the pipeline found identical in Postgres and its S3 archive; a drop needs one whose
-- count still matches the partition at the moment of the drop.
CREATE TABLE activity_reconciled_days (
    day           DATE PRIMARY KEY,
    row_count     BIGINT NOT NULL CHECK (row_count >= 0),
    reconciled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON activity_reconciled_days TO feedstore_batch;
GRANT SELECT ON activity_partition_window, activity_reconciled_days TO feedstore_reader;

-- The database owner is exempt from the window (it could run the DDL itself); callers with
-- EXECUTE are held to it.
CREATE FUNCTION activity_caller_is_owner() RETURNS BOOLEAN
LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT session_user::name = (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database());
$$;

CREATE OR REPLACE FUNCTION ensure_activity_partitions(first_day DATE, last_day DATE)
RETURNS INTEGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    day DATE;
    made INTEGER := 0;
    part TEXT;
    today DATE := (now() AT TIME ZONE 'UTC')::date;
    w activity_partition_window;
BEGIN
    IF first_day IS NULL OR last_day IS NULL OR last_day < first_day THEN
        RAISE EXCEPTION 'ensure_activity_partitions wants first_day <= last_day' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF last_day - first_day > 400 THEN
        RAISE EXCEPTION 'refusing to create % partitions at once', last_day - first_day + 1;
    END IF;
    SELECT * INTO w FROM activity_partition_window;
    IF NOT activity_caller_is_owner()
       AND (first_day < today - w.days_back OR last_day > today + w.days_ahead) THEN
        RAISE EXCEPTION 'partitions may be created from % to % only, not % to %',
            today - w.days_back, today + w.days_ahead, first_day, last_day USING ERRCODE = 'insufficient_privilege';
    END IF;
    day := first_day;
    WHILE day <= last_day LOOP
        part := 'user_activity_p' || to_char(day, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF user_activity FOR VALUES FROM (%L) TO (%L)',
                    part, (day::timestamp AT TIME ZONE 'UTC'), ((day + 1)::timestamp AT TIME ZONE 'UTC'));
                made := made + 1;
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                NULL;  -- created concurrently by another session
            END;
        END IF;
        day := day + 1;
    END LOOP;
    RETURN made;
END;
$$;

-- Drops the daily partitions in [first_day, before) that are reconciled (or empty), and their
-- event ids; `before` may not reach the last `days_kept` days. Returns the dropped names.
CREATE FUNCTION drop_activity_partitions(first_day DATE, before DATE)
RETURNS SETOF TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part RECORD;
    n_rows BIGINT;
    today DATE := (now() AT TIME ZONE 'UTC')::date;
    w activity_partition_window;
BEGIN
    IF first_day IS NULL OR before IS NULL OR before <= first_day THEN
        RAISE EXCEPTION 'drop_activity_partitions wants first_day < before' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF before - first_day > 400 THEN
        RAISE EXCEPTION 'refusing to drop % days at once', before - first_day;
    END IF;
    SELECT * INTO w FROM activity_partition_window;
    IF before > today - w.days_kept + 1 THEN
        RAISE EXCEPTION 'the last % days are kept: before may be % at the latest', w.days_kept,
            today - w.days_kept + 1 USING ERRCODE = 'insufficient_privilege';
    END IF;
    FOR part IN
        SELECT c.relname, to_date(substring(c.relname FROM 16), 'YYYYMMDD') AS day
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'user_activity'::regclass
          AND c.relname ~ '^user_activity_p[0-9]{8}$'
          AND to_date(substring(c.relname FROM 16), 'YYYYMMDD') >= first_day
          AND to_date(substring(c.relname FROM 16), 'YYYYMMDD') < before
        ORDER BY c.relname
    LOOP
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', part.relname);
        EXECUTE format('SELECT count(*) FROM %I', part.relname) INTO n_rows;
        IF n_rows > 0 AND NOT EXISTS (SELECT 1 FROM activity_reconciled_days r
                                    WHERE r.day = part.day AND r.row_count = n_rows) THEN
            RAISE NOTICE 'kept %: % rows, not reconciled', part.relname, n_rows;
            CONTINUE;
        END IF;
        EXECUTE format('DROP TABLE %I', part.relname);
        DELETE FROM activity_event_ids
        WHERE "timestamp" >= part.day::timestamp AT TIME ZONE 'UTC'
          AND "timestamp" < (part.day + 1)::timestamp AT TIME ZONE 'UTC';
        RETURN NEXT part.relname;
    END LOOP;
END;
$$;

-- The unbounded drop stays the owner's (tests and operators); the pipeline uses the bounded one.
REVOKE EXECUTE ON FUNCTION drop_activity_partitions_before(DATE) FROM feedstore_batch;
REVOKE ALL ON FUNCTION drop_activity_partitions(DATE, DATE) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION drop_activity_partitions(DATE, DATE) TO feedstore_batch;
REVOKE ALL ON FUNCTION activity_caller_is_owner() FROM PUBLIC;

-- What 004 left too wide: the pipeline writes activity only through the consumer's path.
REVOKE INSERT ON user_activity FROM feedstore_batch;

ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO feedstore_batch, feedstore_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
