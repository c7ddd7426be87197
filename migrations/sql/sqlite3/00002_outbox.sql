-- The outbox: invalidations committed writes still owe (cacheme
-- Settings.Outbox). A row is written in the writing transaction and
-- deleted once its invalidation is delivered.

-- +goose Up
CREATE TABLE IF NOT EXISTS cacheme_outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms INTEGER NOT NULL,
    prefix     TEXT NOT NULL,
    groups     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cacheme_outbox_prefix_created ON cacheme_outbox (prefix, created_ms);

-- +goose Down
DROP TABLE IF EXISTS cacheme_outbox;
