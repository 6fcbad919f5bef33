-- Catalog and profile records arrive by stream and bulk load (ingestion/upserts.py).
-- ingested_at: when the row last changed here (clock time, for people).
-- change_xid: the transaction that last changed the row. The catalog snapshot exports what
-- changed since the previous export by it: every row changed by a transaction at or after the
-- oldest one still running when that export started (pg_snapshot_xmin), so a row committed
-- while an export ran is in the next one (a commit order, not a clock: no row is lost at the
-- watermark; repeats are deduplicated on read), and a late record whose own updated_at is
-- old is exported too.
ALTER TABLE items ADD COLUMN ingested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                  ADD COLUMN change_xid XID8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE users ADD COLUMN ingested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                  ADD COLUMN change_xid XID8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX items_change_xid_idx ON items (change_xid);
CREATE INDEX users_change_xid_idx ON users (change_xid);

-- The consumer upserts items, users and their follows (stale versions change nothing).
GRANT INSERT, UPDATE ON items, users TO feedstore_ingest;
GRANT SELECT, INSERT, DELETE ON user_follows TO feedstore_ingest;
