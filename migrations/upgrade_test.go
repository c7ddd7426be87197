package migrations

import (
	"context"
	"strconv"
	"testing"

	"github.com/gormcacheme/cacheme/internal/testenv"
)

// TestUpgradeKeepsLog brings a database to version 2, logs a row, and
// checks that Up to Latest (which widens the kinds, by rebuilding the table
// on SQLite) keeps it, id included.
func TestUpgradeKeepsLog(t *testing.T) {
	ctx := context.Background()
	for _, d := range testenv.SQLDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			p, err := provider(ctx, d.DB, d.Dialect)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.UpTo(ctx, 2); err != nil {
				t.Fatal(err)
			}
			for _, target := range []string{"book:0", "book:1"} {
				ins := "INSERT INTO cacheme_invalidations (actor, kind, target, entries) VALUES ('ann', 'key', '" + target + "', 1)"
				if _, err := d.DB.ExecContext(ctx, ins); err != nil {
					t.Fatal(err)
				}
			}
			var old int64
			if err := d.DB.QueryRowContext(ctx, "SELECT id FROM cacheme_invalidations WHERE target = 'book:1'").Scan(&old); err != nil {
				t.Fatal(err)
			}
			if _, err := d.DB.ExecContext(ctx, "INSERT INTO cacheme_invalidations (kind, target) VALUES ('pattern', 'b*')"); err == nil {
				t.Fatal("version 2 accepts kind 'pattern'")
			}
			if err := Up(ctx, d.DB, d.Dialect); err != nil {
				t.Fatal(err)
			}
			var actor, target string
			if err := d.DB.QueryRowContext(ctx, "SELECT actor, target FROM cacheme_invalidations WHERE id = "+itoa(old)).Scan(&actor, &target); err != nil || actor != "ann" || target != "book:1" {
				t.Fatalf("row %d after Up: %q %q %v", old, actor, target, err)
			}
			if _, err := d.DB.ExecContext(ctx, "INSERT INTO cacheme_invalidations (actor, kind, target) VALUES ('bob', 'pattern', 'b*')"); err != nil {
				t.Fatal(err)
			}
			var id int64
			if err := d.DB.QueryRowContext(ctx, "SELECT id FROM cacheme_invalidations WHERE actor = 'bob'").Scan(&id); err != nil || id <= old {
				t.Fatalf("new row id %d, %v; want past %d", id, err, old)
			}
			if v, err := Version(ctx, d.DB, d.Dialect); err != nil || v != Latest {
				t.Fatalf("Version = %d, %v", v, err)
			}
		})
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
