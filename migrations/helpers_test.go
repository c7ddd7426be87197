package migrations_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/gormcacheme/cacheme/internal/testenv"
	"github.com/gormcacheme/cacheme/migrations"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine is left running
// after them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var bg = context.Background()

// testDBs returns a SQLite file in the test's temp dir and, when
// CACHEME_TEST_POSTGRES is set, a fresh schema on that server, dropped after
// the test. A set variable whose server is unreachable fails the test.
func testDBs(t *testing.T) []testenv.Database { return testenv.SQLDBs(t) }

func sqliteDB(t *testing.T) *sql.DB { return testenv.SQLite(t) }

// columns returns the column names of table in the current schema.
func columns(t *testing.T, d testenv.Database, table string) []string {
	t.Helper()
	q := "SELECT name FROM pragma_table_info('" + table + "') ORDER BY cid"
	if d.Dialect == migrations.Postgres {
		q = "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '" + table + "' ORDER BY ordinal_position"
	}
	rows, err := d.DB.QueryContext(bg, q)
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
