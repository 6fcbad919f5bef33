-- Catalog and profile records arrive by stream and bulk load (ingestion/upserts.py).
-- ingested_at: when the row last changed here. The catalog snapshot exports what changed since
-- its previous watermark by this column (>=, with an overlap, deduplicated on read), so a record
-- whose own updated_at is old but that arrived late is not missed, and no created_at (1969 or
-- 1900) falls outside the first export.
ALTER TABLE items ADD COLUMN ingested_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE users ADD COLUMN ingested_at TIMESTAMPTZ NOT NULL DEFAULT now();
CREATE INDEX items_ingested_at_idx ON items (ingested_at);
CREATE INDEX users_ingested_at_idx ON users (ingested_at);

-- The consumer upserts items, users and their follows (stale versions change nothing).
GRANT INSERT, UPDATE ON items, users TO feedstore_ingest;
GRANT SELECT, INSERT, DELETE ON user_follows TO feedstore_ingest;
