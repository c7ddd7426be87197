package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"sync"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"
)

// The dialects Up accepts.
const (
	Postgres = "postgres" // PostgreSQL, through any database/sql driver (pgx, lib/pq)
	SQLite   = "sqlite3"  // SQLite, through any database/sql driver
)

// Table names.
const (
	// InvalidationsTable is the log of invalidations made through the admin
	// page.
	InvalidationsTable = "cacheme_invalidations"

	// VersionTable records the applied steps. It is the package's own, so
	// that it never mixes with an application's goose_db_version.
	VersionTable = "cacheme_schema_version"

	// OutboxTable holds the invalidations committed writes still owe
	// (cacheme.Settings.Outbox); it is cacheme.OutboxTable.
	OutboxTable = "cacheme_outbox"
)

// Latest is the version Up brings a database to: the number of the last
// step.
const Latest int64 = 3

var (
	// ErrUnknownDialect is returned (wrapped) for a dialect other than
	// Postgres and SQLite.
	ErrUnknownDialect = errors.New("migrations: unknown dialect")

	// ErrNoDB is returned when the *sql.DB is nil.
	ErrNoDB = errors.New("migrations: nil *sql.DB")
)

//go:embed sql/postgres/*.sql sql/sqlite3/*.sql
var files embed.FS

// upMu serializes Up within the process. Across processes, PostgreSQL
// runs hold an advisory lock and SQLite steps are written to succeed when
// another process applied them first.
var upMu sync.Mutex

// Up brings the schema of db up to Latest, applying each missing step in a
// transaction of its own. It is idempotent: on an up-to-date database it
// only reads the version table. dialect is Postgres or SQLite; anything
// else is an error wrapping ErrUnknownDialect.
func Up(ctx context.Context, db *sql.DB, dialect string) error {
	p, err := provider(ctx, db, dialect)
	if err != nil {
		return err
	}
	// Provider.Close would close db, which is the caller's: it is not
	// called, and the provider holds nothing else.
	upMu.Lock()
	defer upMu.Unlock()
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrations: up (%s): %w", dialect, err)
	}
	return nil
}

// Version returns the schema version of db: the highest step applied, 0 if
// none (the version table does not exist yet). It reads only, creating
// nothing.
func Version(ctx context.Context, db *sql.DB, dialect string) (int64, error) {
	d, err := gooseDialect(db, dialect)
	if err != nil {
		return 0, err
	}
	store, err := database.NewStore(d, VersionTable)
	if err != nil {
		return 0, fmt.Errorf("migrations: %w", err)
	}
	q := "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '" + VersionTable + "'"
	if dialect == Postgres {
		q = "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = '" + VersionTable + "'"
	}
	var exists bool
	if err := db.QueryRowContext(ctx, q).Scan(&exists); err != nil {
		return 0, fmt.Errorf("migrations: version (%s): %w", dialect, err)
	}
	if !exists {
		return 0, nil
	}
	v, err := store.GetLatestVersion(ctx, db)
	if errors.Is(err, database.ErrVersionNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("migrations: version (%s): %w", dialect, err)
	}
	return v, nil
}

// CheckDialect returns nil for Postgres and SQLite and an error wrapping
// ErrUnknownDialect otherwise.
func CheckDialect(dialect string) error {
	switch dialect {
	case Postgres, SQLite:
		return nil
	}
	return fmt.Errorf("%w %q (want %q or %q)", ErrUnknownDialect, dialect, Postgres, SQLite)
}

func gooseDialect(db *sql.DB, dialect string) (goose.Dialect, error) {
	if err := CheckDialect(dialect); err != nil {
		return "", err
	}
	if db == nil {
		return "", ErrNoDB
	}
	if dialect == Postgres {
		return goose.DialectPostgres, nil
	}
	return goose.DialectSQLite3, nil
}

// provider returns a goose provider for the dialect's embedded steps.
func provider(ctx context.Context, db *sql.DB, dialect string) (*goose.Provider, error) {
	d, err := gooseDialect(db, dialect)
	if err != nil {
		return nil, err
	}
	steps, err := fs.Sub(files, "sql/"+dialect)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	opts := []goose.ProviderOption{
		goose.WithTableName(VersionTable),
		goose.WithDisableGlobalRegistry(true), // only our SQL files, never the application's Go migrations
		goose.WithLogger(goose.NopLogger()),
	}
	if dialect == Postgres {
		id, err := lockID(ctx, db)
		if err != nil {
			return nil, err
		}
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(id), lock.WithLockTimeout(1, 120))
		if err != nil {
			return nil, fmt.Errorf("migrations: %w", err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(d, db, steps, opts...)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	return p, nil
}

// lockID returns the advisory lock id for the current schema, so that Up
// in one schema never waits for Up in another (or for the application's
// own goose lock).
func lockID(ctx context.Context, db *sql.DB) (int64, error) {
	var schema sql.NullString
	if err := db.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return 0, fmt.Errorf("migrations: current schema: %w", err)
	}
	h := fnv.New64a()
	h.Write([]byte("cacheme/migrations:" + schema.String))
	return int64(h.Sum64()), nil
}
