-- Activity, range-partitioned by UTC day on "timestamp". The primary key includes the
-- partition key, as Postgres requires; the event id is deterministic (see DESIGN.md) so
-- (event_id, timestamp) is the dedup key of ON CONFLICT DO NOTHING.

CREATE TABLE user_activity (
    event_id      UUID NOT NULL,
    user_id       BIGINT NOT NULL,
    item_id       BIGINT NOT NULL,
    event_type    VARCHAR(20) NOT NULL CHECK (event_type IN ('view', 'like', 'share', 'comment')),
    "timestamp"   TIMESTAMPTZ NOT NULL,
    context       JSONB,
    dwell_time_ms INTEGER CHECK (dwell_time_ms >= 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, "timestamp")
) PARTITION BY RANGE ("timestamp");

CREATE INDEX user_activity_user_ts_idx ON user_activity (user_id, "timestamp");
CREATE INDEX user_activity_item_ts_idx ON user_activity (item_id, "timestamp");

-- Creates the missing daily partitions for [first_day, last_day]; returns how many it made.
-- SECURITY DEFINER so the ingestion role can call it without owning the table.
CREATE FUNCTION ensure_activity_partitions(first_day DATE, last_day DATE)
RETURNS INTEGER
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    day DATE;
    made INTEGER := 0;
    part TEXT;
BEGIN
    IF last_day - first_day > 400 THEN
        RAISE EXCEPTION 'refusing to create % partitions at once', last_day - first_day + 1;
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

-- Drops daily partitions wholly before cutoff; returns their names. Retention calls it
-- only after the day's archive has been reconciled.
CREATE FUNCTION drop_activity_partitions_before(cutoff DATE)
RETURNS SETOF TEXT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    part RECORD;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'user_activity'::regclass
          AND c.relname ~ '^user_activity_p[0-9]{8}$'
          AND to_date(substring(c.relname FROM 16), 'YYYYMMDD') < cutoff
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        RETURN NEXT part.relname;
    END LOOP;
END;
$$;
