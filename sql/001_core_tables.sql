-- Users, the item catalog and who follows whom. Embeddings live in Parquet on S3 and in
-- Redis (Feast), not here: Postgres serves operational queries.

CREATE TABLE users (
    user_id              BIGINT PRIMARY KEY CHECK (user_id > 0),
    created_at           TIMESTAMPTZ NOT NULL,
    age_range            VARCHAR(10),
    country              CHAR(2),
    language             VARCHAR(8),
    demographics         JSONB NOT NULL DEFAULT '{}'::jsonb,
    preferred_categories TEXT[] NOT NULL DEFAULT '{}',
    preferences          JSONB NOT NULL DEFAULT '{}'::jsonb,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX users_created_at_idx ON users (created_at);

CREATE TABLE user_follows (
    user_id     BIGINT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    followed_id BIGINT NOT NULL CHECK (followed_id > 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, followed_id)
);
CREATE INDEX user_follows_followed_idx ON user_follows (followed_id);

CREATE TABLE items (
    item_id    BIGINT PRIMARY KEY CHECK (item_id > 0),
    creator_id BIGINT NOT NULL CHECK (creator_id > 0),
    category   VARCHAR(50),
    tags       TEXT[],
    media_type VARCHAR(10) NOT NULL CHECK (media_type IN ('video', 'image', 'text')),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ,
    metadata   JSONB
);
CREATE INDEX items_category_idx ON items (category);
CREATE INDEX items_created_at_idx ON items (created_at);
CREATE INDEX items_creator_idx ON items (creator_id);
