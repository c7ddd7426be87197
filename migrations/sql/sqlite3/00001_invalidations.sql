-- The log of invalidations made through the admin page.

-- +goose Up
CREATE TABLE IF NOT EXISTS cacheme_invalidations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor      TEXT NOT NULL DEFAULT '',
    kind       TEXT NOT NULL CHECK (kind IN ('tag', 'group', 'key')),
    target     TEXT NOT NULL,
    entries    INTEGER NOT NULL DEFAULT 0
);

-- +goose Down
DROP TABLE IF EXISTS cacheme_invalidations;
