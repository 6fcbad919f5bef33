-- What a registered checkpoint is made of (relative path -> SHA-256 of its content), so a
-- download can prove it got the same bytes, and the code version that registered it.
ALTER TABLE model_metadata
    ADD COLUMN files        JSONB NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN code_version TEXT;
