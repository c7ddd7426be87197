-- The log also records invalidations of a node type and by pattern.
-- SQLite cannot change a CHECK constraint: the table is rebuilt, rows and
-- ids kept. (A process that finds the step applied by another one meanwhile
-- rebuilds it again, harmlessly.)

-- +goose Up
DROP TABLE IF EXISTS cacheme_invalidations_new;
CREATE TABLE cacheme_invalidations_new (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor      TEXT NOT NULL DEFAULT '',
    kind       TEXT NOT NULL CHECK (kind IN ('tag', 'group', 'key', 'node', 'pattern')),
    target     TEXT NOT NULL,
    entries    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO cacheme_invalidations_new (id, created_at, actor, kind, target, entries)
    SELECT id, created_at, actor, kind, target, entries FROM cacheme_invalidations;
DROP TABLE cacheme_invalidations;
ALTER TABLE cacheme_invalidations_new RENAME TO cacheme_invalidations;

-- +goose Down
DROP TABLE IF EXISTS cacheme_invalidations_old;
CREATE TABLE cacheme_invalidations_old (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    actor      TEXT NOT NULL DEFAULT '',
    kind       TEXT NOT NULL CHECK (kind IN ('tag', 'group', 'key')),
    target     TEXT NOT NULL,
    entries    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO cacheme_invalidations_old (id, created_at, actor, kind, target, entries)
    SELECT id, created_at, actor, kind, target, entries FROM cacheme_invalidations
    WHERE kind IN ('tag', 'group', 'key');
DROP TABLE cacheme_invalidations;
ALTER TABLE cacheme_invalidations_old RENAME TO cacheme_invalidations;
