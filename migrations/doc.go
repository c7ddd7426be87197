// Package migrations creates and upgrades the SQL tables that cacheme's
// optional parts need, on PostgreSQL and SQLite.
//
// Two tables. cacheme_outbox holds the invalidations that committed writes
// still owe, when cacheme.Settings.Outbox is on: a row is written in the
// writing transaction and deleted once delivered (id, created_ms, prefix,
// groups as a JSON array). cacheme_invalidations is the log the admin page
// (package admin) writes one row to for every invalidation it makes:
//
//	id          primary key
//	created_at  when the invalidation was made
//	actor       who made it, as the mounting application names them ("" if unknown)
//	kind        "tag", "group", "key", "node" (a node type) or "pattern"
//	target      the tag, group name, key, node type or pattern
//	entries     how many cache entries it hit
//
// Up applies the missing steps and is idempotent: call it at start-up, as
// often as you like. The steps are SQL files embedded in the binary, one
// set per dialect, run by github.com/pressly/goose/v3. Each step runs in a
// transaction, and the applied versions are recorded in a table of the
// package's own, cacheme_schema_version, so the application's own goose
// migrations (goose_db_version by default) are never mixed up with these.
// Calls within one process are serialized. On PostgreSQL, Up also holds an
// advisory lock for the current schema while it runs, so processes starting
// together apply each step once; on SQLite, whose steps are written with IF
// NOT EXISTS, a process that finds a step already applied by another one
// succeeds too.
//
// The package needs a *sql.DB with its driver already registered; it
// imports no database driver. The tables live in the connection's current
// schema (PostgreSQL's search_path).
//
// Cache keys and values in Redis are not migrated here: their format is
// versioned by the cacheme package itself.
package migrations
