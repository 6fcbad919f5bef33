-- Registry of training sets and model checkpoints; the artefacts themselves live on S3.

CREATE TABLE training_datasets (
    dataset_id          BIGSERIAL PRIMARY KEY,
    name                TEXT NOT NULL,
    ds                  DATE NOT NULL,
    uri                 TEXT NOT NULL,
    row_count           BIGINT NOT NULL CHECK (row_count >= 0),
    positive_count      BIGINT NOT NULL CHECK (positive_count >= 0),
    negative_count      BIGINT NOT NULL CHECK (negative_count >= 0),
    hard_negative_count BIGINT NOT NULL DEFAULT 0 CHECK (hard_negative_count >= 0),
    label_balance       DOUBLE PRECISION,
    feature_service     TEXT NOT NULL,
    code_version        TEXT NOT NULL,
    manifest            JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (name, ds)
);

CREATE TABLE model_metadata (
    model_id            BIGSERIAL PRIMARY KEY,
    model_name          TEXT NOT NULL,
    version             TEXT NOT NULL,
    checkpoint_uri      TEXT NOT NULL,
    experiment_uri      TEXT,
    metrics             JSONB NOT NULL DEFAULT '{}'::jsonb,
    params              JSONB NOT NULL DEFAULT '{}'::jsonb,
    training_dataset_id BIGINT REFERENCES training_datasets (dataset_id),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (model_name, version)
);
