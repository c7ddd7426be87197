-- The log also records invalidations of a node type and by pattern.

-- +goose Up
ALTER TABLE cacheme_invalidations DROP CONSTRAINT IF EXISTS cacheme_invalidations_kind_check;
ALTER TABLE cacheme_invalidations ADD CONSTRAINT cacheme_invalidations_kind_check
    CHECK (kind IN ('tag', 'group', 'key', 'node', 'pattern'));

-- +goose Down
DELETE FROM cacheme_invalidations WHERE kind IN ('node', 'pattern');
ALTER TABLE cacheme_invalidations DROP CONSTRAINT IF EXISTS cacheme_invalidations_kind_check;
ALTER TABLE cacheme_invalidations ADD CONSTRAINT cacheme_invalidations_kind_check
    CHECK (kind IN ('tag', 'group', 'key'));
