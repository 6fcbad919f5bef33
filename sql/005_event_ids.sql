-- One event id is one event, whatever its timestamp: user_activity's key must hold its
-- partition column, so the dedup authority is this unpartitioned table of every stored id.
-- The consumer inserts here first (ON CONFLICT DO NOTHING RETURNING) and stores only the rows
-- whose id was new, in one statement; the first copy of an event wins. Ids live as long as the
-- day of their event is kept in user_activity (the dedup horizon is the retention window).

CREATE TABLE activity_event_ids (
    event_id    UUID PRIMARY KEY,
    "timestamp" TIMESTAMPTZ NOT NULL
);
CREATE INDEX activity_event_ids_ts_idx ON activity_event_ids ("timestamp");

INSERT INTO activity_event_ids (event_id, "timestamp")
SELECT DISTINCT ON (event_id) event_id, "timestamp" FROM user_activity ORDER BY event_id, "timestamp";

GRANT INSERT ON activity_event_ids TO feedstore_ingest;
GRANT SELECT (event_id) ON activity_event_ids TO feedstore_ingest;

-- Dropping a day also forgets its ids (same signature: the grants of 004 stay).
CREATE OR REPLACE FUNCTION drop_activity_partitions_before(cutoff DATE)
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
    DELETE FROM activity_event_ids WHERE "timestamp" < cutoff::timestamp AT TIME ZONE 'UTC';
END;
$$;
