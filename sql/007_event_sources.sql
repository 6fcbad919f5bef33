-- Where each stored event came from. A replay after a crash between the Postgres commit and a
-- later tier (S3, Redis) finds its ids already claimed; a claimed id whose source is the very
-- message being replayed is that message's own event, accepted again for the later tiers, while
-- a claimed id from any other message is a re-send and is a duplicate in every tier.
-- Rows claimed before this migration have no source: a replay treats them as re-sends.

ALTER TABLE activity_event_ids
    ADD COLUMN source_topic     TEXT,
    ADD COLUMN source_partition INTEGER,
    ADD COLUMN source_offset    BIGINT;

GRANT SELECT (event_id, source_topic, source_partition, source_offset) ON activity_event_ids TO feedstore_ingest;

-- Retention deletes ids by day; a BRIN index serves that at a fraction of a B-tree's cost per
-- insert (ids arrive roughly in time order).
DROP INDEX activity_event_ids_ts_idx;
CREATE INDEX activity_event_ids_ts_brin ON activity_event_ids USING brin ("timestamp");
