package migrations_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/gormcacheme/cacheme/migrations"
)

var bg = context.Background()

// testDB is one database a test runs on.
type testDB struct {
	name    string
	db      *sql.DB
	dialect string
}

// testDBs returns a SQLite file in the test's temp dir and, when
// CACHEME_TEST_POSTGRES is set, a fresh schema on that server, dropped after
// the test. A set variable whose server is unreachable fails the test.
func testDBs(t *testing.T) []testDB {
	t.Helper()
	dbs := []testDB{{"sqlite", sqliteDB(t), migrations.SQLite}}
	if dsn := os.Getenv("CACHEME_TEST_POSTGRES"); dsn != "" {
		dbs = append(dbs, testDB{"postgres", postgresDB(t, dsn), migrations.Postgres})
	}
	return dbs
}

func sqliteDB(t *testing.T) *sql.DB {
	t.Helper()
	g, err := gorm.Open(sqlite.Open(filepath.Join(t.TempDir(), "test.db")+"?_busy_timeout=5000"), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("sqlite: %v", err)
	}
	db, err := g.DB()
	if err != nil {
		t.Fatalf("sqlite: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func postgresDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	admin := openPostgres(t, dsn)
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "cm_mig_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(bg, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("CACHEME_TEST_POSTGRES is set but unreachable: %v", err)
	}
	t.Cleanup(func() {
		if _, err := admin.ExecContext(context.WithoutCancel(bg), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return openPostgres(t, dsn+sep+"search_path="+schema)
}

func openPostgres(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	g, err := gorm.Open(postgres.Open(dsn), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		t.Fatalf("CACHEME_TEST_POSTGRES is set but unusable: %v", err)
	}
	db, err := g.DB()
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// columns returns the column names of table in the current schema.
func columns(t *testing.T, d testDB, table string) []string {
	t.Helper()
	q := "SELECT name FROM pragma_table_info('" + table + "') ORDER BY cid"
	if d.dialect == migrations.Postgres {
		q = "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '" + table + "' ORDER BY ordinal_position"
	}
	rows, err := d.db.QueryContext(bg, q)
	if err != nil {
		t.Fatalf("columns of %s: %v", table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatalf("columns of %s: %v", table, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("columns of %s: %v", table, err)
	}
	return out
}
