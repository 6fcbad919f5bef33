-- Dead letters already sent back through ingestion by `feedstore dlq replay`, so a second replay
-- (or one after a crash) does not send them again. A letter is recorded once its re-send is
-- acknowledged; a crash between the two re-sends it, and ingestion's own dedup (event ids,
-- newest-version upserts) makes that land once.
CREATE TABLE dlq_replays (
    dlq_topic     TEXT NOT NULL,
    dlq_partition INTEGER NOT NULL,
    dlq_offset    BIGINT NOT NULL,
    source_topic  TEXT NOT NULL,
    reason        TEXT NOT NULL,
    replayed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
GRANT SELECT, INSERT ON dlq_replays TO feedstore_ingest, feedstore_batch;
