-- Manifest of the data stage (DuckDB): what was imported, how it is annotated and split,
-- which token caches exist and what failed. Every statement is idempotent; run by
-- preprocessing.manifest.open_manifest on each connection.

-- One row per media file. source_id is the corpus' clip_id.
CREATE TABLE IF NOT EXISTS sources (
    source_id    VARCHAR PRIMARY KEY,
    path         VARCHAR NOT NULL,    -- absolute path of the file
    content_hash VARCHAR NOT NULL,    -- sha256 of the file's bytes
    record_hash  VARCHAR NOT NULL,    -- sha256 of the canonical JSON of its annotation record
    kind         VARCHAR NOT NULL CHECK (kind IN ('video', 'image')),
    duration     DOUBLE,              -- seconds; 0 for images
    fps          DOUBLE,
    width        INTEGER,             -- pixels, as stored
    height       INTEGER,
    codec        VARCHAR,             -- NULL when imported without probing
    imported_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- Annotations, one row each. Which columns are set depends on the task:
--   caption: text (whole clip, start_s/end_s NULL); event: text, start_s, end_s, attributes;
--   vqa: question, answer; classification: label.
CREATE TABLE IF NOT EXISTS annotations (
    source_id  VARCHAR NOT NULL,
    task       VARCHAR NOT NULL CHECK (task IN ('caption', 'vqa', 'classification', 'event')),
    idx        INTEGER NOT NULL,      -- order within (source_id, task), from 0
    text       VARCHAR,
    question   VARCHAR,
    answer     VARCHAR,
    label      VARCHAR,
    start_s    DOUBLE,                -- seconds from the start of the clip
    end_s      DOUBLE,
    attributes VARCHAR,               -- JSON of an event's other fields (colour, shape, ...)
    PRIMARY KEY (source_id, task, idx)
);

CREATE TABLE IF NOT EXISTS splits (
    source_id VARCHAR NOT NULL,
    dataset   VARCHAR NOT NULL,
    split     VARCHAR NOT NULL,       -- 'train', 'val', 'test', ...
    PRIMARY KEY (source_id, dataset)
);

-- One row per content-addressed token cache (preprocessing.shards.ShardedCache).
CREATE TABLE IF NOT EXISTS token_caches (
    cache_key   VARCHAR PRIMARY KEY,
    encoder_id  VARCHAR NOT NULL,
    config_json VARCHAR NOT NULL,     -- the resolved config the key was computed from
    path        VARCHAR NOT NULL,
    n_samples   INTEGER NOT NULL,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS cache_members (
    cache_key VARCHAR NOT NULL,
    source_id VARCHAR NOT NULL,
    PRIMARY KEY (cache_key, source_id)
);

-- The latest failure of each path at each stage; a later success at that stage removes it.
CREATE TABLE IF NOT EXISTS failures (
    path        VARCHAR NOT NULL,
    stage       VARCHAR NOT NULL,     -- 'import', 'decode', 'encode', ...
    error       VARCHAR NOT NULL,
    recorded_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (path, stage)
);

-- What an import changed in a row it kept (for example invalid UTF-8 replaced), per file.
CREATE TABLE IF NOT EXISTS import_notes (
    path        VARCHAR NOT NULL,
    note        VARCHAR NOT NULL,
    recorded_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (path)
);

-- Tokens per sample of each cache (for token totals of data mixes); older databases get the column.
ALTER TABLE token_caches ADD COLUMN IF NOT EXISTS num_tokens INTEGER;

-- The files of a sharded token cache (preprocessing.shards): Parquet or WebDataset tars.
CREATE TABLE IF NOT EXISTS cache_shards (
    cache_key VARCHAR NOT NULL,
    shard_idx INTEGER NOT NULL,
    path      VARCHAR NOT NULL,
    format    VARCHAR NOT NULL CHECK (format IN ('parquet', 'webdataset')),
    n_samples INTEGER NOT NULL,
    bytes     BIGINT NOT NULL,
    PRIMARY KEY (cache_key, shard_idx)
);

-- A named data mix: components with weights (paper's SFT stage mixes VQA, captions,
-- classification and pretraining data). A component is the annotations of one task in one
-- dataset's split; its weight is its share of draws (weights need not sum to 1).
CREATE TABLE IF NOT EXISTS mixes (
    mix_name    VARCHAR PRIMARY KEY,
    description VARCHAR,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS mix_components (
    mix_name  VARCHAR NOT NULL,
    component VARCHAR NOT NULL,       -- a name within the mix, e.g. 'vqa'
    task      VARCHAR NOT NULL CHECK (task IN ('caption', 'vqa', 'classification', 'event')),
    dataset   VARCHAR NOT NULL,
    split     VARCHAR NOT NULL,
    weight    DOUBLE NOT NULL CHECK (weight > 0),
    PRIMARY KEY (mix_name, component)
);

-- What one training run actually drew from a mix, in draw order.
CREATE TABLE IF NOT EXISTS mix_draws (
    run_id    VARCHAR NOT NULL,
    mix_name  VARCHAR NOT NULL,
    seed      BIGINT NOT NULL,
    draw_idx  BIGINT NOT NULL,
    component VARCHAR NOT NULL,
    source_id VARCHAR NOT NULL,
    task      VARCHAR NOT NULL,
    idx       INTEGER NOT NULL,       -- annotation idx within (source_id, task)
    PRIMARY KEY (run_id, draw_idx)
);

-- How each annotation file was imported (importer, folder, dataset, options as JSON): what
-- `vljepa data failures --retry` re-imports a failed row of it with (preprocessing.retry).
CREATE TABLE IF NOT EXISTS import_origins (
    origin  VARCHAR PRIMARY KEY,      -- the annotation file (or tar) that failures name with ":line"
    kind    VARCHAR NOT NULL,         -- corpus, folder, video2dataset, msrvtt
    dataset VARCHAR NOT NULL,
    root    VARCHAR NOT NULL,
    options VARCHAR NOT NULL
);
