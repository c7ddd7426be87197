package migrations_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gormcacheme/cacheme/internal/testenv"
	"github.com/gormcacheme/cacheme/migrations"
)

func TestUpTwice(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			v, err := migrations.Version(bg, d.DB, d.Dialect)
			if err != nil || v != 0 {
				t.Fatalf("Version before Up = %d, %v; want 0, nil", v, err)
			}
			if got := columns(t, d, migrations.VersionTable); len(got) != 0 {
				t.Fatalf("Version created %s: columns %v", migrations.VersionTable, got)
			}
			for i := range 2 {
				if err := migrations.Up(bg, d.DB, d.Dialect); err != nil {
					t.Fatalf("Up #%d: %v", i+1, err)
				}
				v, err := migrations.Version(bg, d.DB, d.Dialect)
				if err != nil || v != migrations.Latest {
					t.Fatalf("Version after Up #%d = %d, %v; want %d, nil", i+1, v, err, migrations.Latest)
				}
			}
			want := []string{"id", "created_at", "actor", "kind", "target", "entries"}
			if got := columns(t, d, migrations.InvalidationsTable); !slices.Equal(got, want) {
				t.Fatalf("columns of %s: got %v; want %v", migrations.InvalidationsTable, got, want)
			}
			if got := columns(t, d, migrations.VersionTable); len(got) == 0 {
				t.Fatalf("no version table %s", migrations.VersionTable)
			}
			if got := columns(t, d, "goose_db_version"); len(got) != 0 {
				t.Fatalf("goose's default version table exists: %v", got)
			}
			// Each step is recorded once, however often Up ran.
			var n int
			q := "SELECT count(*) FROM " + migrations.VersionTable + " WHERE version_id = 1"
			if err := d.DB.QueryRowContext(bg, q).Scan(&n); err != nil || n != 1 {
				t.Fatalf("version 1 rows = %d, %v; want 1, nil", n, err)
			}
		})
	}
}

func TestTableWorks(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			if err := migrations.Up(bg, d.DB, d.Dialect); err != nil {
				t.Fatalf("Up: %v", err)
			}
			ins := "INSERT INTO cacheme_invalidations (actor, kind, target, entries) VALUES ('ann', 'tag', 'books', 3)"
			if _, err := d.DB.ExecContext(bg, ins); err != nil {
				t.Fatalf("insert: %v", err)
			}
			var (
				created          time.Time
				actor, kind, tgt string
				entries          int
			)
			q := "SELECT created_at, actor, kind, target, entries FROM cacheme_invalidations"
			if err := d.DB.QueryRowContext(bg, q).Scan(&created, &actor, &kind, &tgt, &entries); err != nil {
				t.Fatalf("select: %v", err)
			}
			if actor != "ann" || kind != "tag" || tgt != "books" || entries != 3 {
				t.Fatalf("got %q %q %q %d; want ann tag books 3", actor, kind, tgt, entries)
			}
			if age := time.Since(created); age < -time.Hour || age > time.Hour {
				t.Fatalf("created_at = %v; want about now", created)
			}
			for _, kind := range []string{"node", "pattern"} {
				ins := "INSERT INTO cacheme_invalidations (kind, target) VALUES ('" + kind + "', 'book:*')"
				if _, err := d.DB.ExecContext(bg, ins); err != nil {
					t.Fatalf("kind %q refused: %v", kind, err)
				}
			}
			bad := "INSERT INTO cacheme_invalidations (kind, target) VALUES ('wipe', 'CM:*')"
			if _, err := d.DB.ExecContext(bg, bad); err == nil {
				t.Fatal("kind 'wipe' accepted; want the CHECK constraint to reject it")
			}
		})
	}
}

func TestUpConcurrent(t *testing.T) {
	for _, d := range testDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i := range errs {
				wg.Go(func() { errs[i] = migrations.Up(bg, d.DB, d.Dialect) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("Up #%d: %v", i, err)
				}
			}
			if v, err := migrations.Version(bg, d.DB, d.Dialect); err != nil || v != migrations.Latest {
				t.Fatalf("Version = %d, %v; want %d, nil", v, err, migrations.Latest)
			}
		})
	}
}

func TestBadArguments(t *testing.T) {
	db := sqliteDB(t)
	tests := []struct {
		name    string
		dialect string
		nilDB   bool
		want    error
	}{
		{"mysql", "mysql", false, migrations.ErrUnknownDialect},
		{"empty dialect", "", false, migrations.ErrUnknownDialect},
		{"postgresql spelled out", "postgresql", false, migrations.ErrUnknownDialect},
		{"nil db", migrations.SQLite, true, migrations.ErrNoDB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := db
			if tt.nilDB {
				d = nil
			}
			if err := migrations.Up(bg, d, tt.dialect); !errors.Is(err, tt.want) {
				t.Fatalf("Up: got %v; want %v", err, tt.want)
			}
			if _, err := migrations.Version(bg, d, tt.dialect); !errors.Is(err, tt.want) {
				t.Fatalf("Version: got %v; want %v", err, tt.want)
			}
		})
	}
	if got := columns(t, testenv.Database{Name: "sqlite", DB: db, Dialect: migrations.SQLite}, migrations.VersionTable); len(got) != 0 {
		t.Fatalf("a rejected call created %s", migrations.VersionTable)
	}
}

// TestStepsMatch checks that both dialects have the same steps, numbered
// 1 to Latest.
func TestStepsMatch(t *testing.T) {
	names := map[string][]string{}
	for _, d := range []string{migrations.Postgres, migrations.SQLite} {
		m, err := filepath.Glob(filepath.Join("sql", d, "*.sql"))
		if err != nil || len(m) == 0 {
			t.Fatalf("steps of %s: %v, %v", d, m, err)
		}
		for i, f := range m {
			name := filepath.Base(f)
			if want := fmt.Sprintf("%05d_", i+1); !strings.HasPrefix(name, want) {
				t.Fatalf("step %s of %s: want prefix %s", name, d, want)
			}
			names[d] = append(names[d], name)
		}
	}
	if !slices.Equal(names[migrations.Postgres], names[migrations.SQLite]) {
		t.Fatalf("steps differ: postgres %v; sqlite3 %v", names[migrations.Postgres], names[migrations.SQLite])
	}
	if n := int64(len(names[migrations.SQLite])); n != migrations.Latest {
		t.Fatalf("%d steps; Latest is %d", n, migrations.Latest)
	}
}
