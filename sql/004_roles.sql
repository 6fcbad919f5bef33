-- Least-privilege group roles (NOLOGIN): grant them to the login users of each process.
--   feedstore_ingest: insert activity (and see the key columns it inserted), read users and items.
--   feedstore_batch:  the daily pipeline; reads everything, writes catalog, registry, retention.
--   feedstore_reader: read-only.
DO $$
DECLARE
    r TEXT;
BEGIN
    FOREACH r IN ARRAY ARRAY['feedstore_ingest', 'feedstore_batch', 'feedstore_reader'] LOOP
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- roles are cluster-wide; another database may have made it
        END;
    END LOOP;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO feedstore_ingest, feedstore_batch',
                   current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO feedstore_reader', current_database());
END;
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON FUNCTION ensure_activity_partitions(DATE, DATE) FROM PUBLIC;
REVOKE ALL ON FUNCTION drop_activity_partitions_before(DATE) FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO feedstore_ingest, feedstore_batch, feedstore_reader;

GRANT INSERT ON user_activity TO feedstore_ingest;
GRANT SELECT (event_id, "timestamp") ON user_activity TO feedstore_ingest;
GRANT SELECT ON users, items TO feedstore_ingest;
GRANT EXECUTE ON FUNCTION ensure_activity_partitions(DATE, DATE) TO feedstore_ingest, feedstore_batch;

GRANT SELECT ON ALL TABLES IN SCHEMA public TO feedstore_batch, feedstore_reader;
GRANT INSERT, UPDATE, DELETE ON users, user_follows, items, training_datasets, model_metadata
    TO feedstore_batch;
GRANT INSERT ON user_activity TO feedstore_batch;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO feedstore_batch;
GRANT EXECUTE ON FUNCTION drop_activity_partitions_before(DATE) TO feedstore_batch;

ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO feedstore_batch, feedstore_reader;
