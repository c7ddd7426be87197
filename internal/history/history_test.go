package history_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/gormcacheme/cacheme/internal/history"
	"github.com/gormcacheme/cacheme/internal/testenv"
	"github.com/gormcacheme/cacheme/migrations"
)

func TestRunAndPage(t *testing.T) {
	ctx := context.Background()
	for _, d := range testenv.SQLDBs(t) {
		t.Run(d.Name, func(t *testing.T) {
			if err := migrations.Up(ctx, d.DB, d.Dialect); err != nil {
				t.Fatal(err)
			}
			at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
			l := history.Log{DB: d.DB, Dialect: d.Dialect, Now: func() time.Time { return at }}
			for i := range 5 {
				n, err := l.Run(ctx, "ann", "key", "k"+strconv.Itoa(i), func(context.Context) (int, error) { return i, nil })
				if err != nil || n != i {
					t.Fatalf("Run: %d, %v", n, err)
				}
			}
			// A failed invalidation leaves no row.
			fail := errors.New("redis down")
			if _, err := l.Run(ctx, "ann", "tag", "t", func(context.Context) (int, error) { return 0, fail }); !errors.Is(err, fail) {
				t.Fatalf("Run of a failure: %v", err)
			}
			rows, next, err := l.Page(ctx, 0, 2)
			if err != nil || len(rows) != 2 || rows[0].Target != "k4" || rows[1].Target != "k3" || next != rows[1].ID {
				t.Fatalf("page 1: %+v, %d, %v", rows, next, err)
			}
			if !rows[0].Time.Equal(at) || rows[0].Actor != "ann" || rows[0].Entries != 4 || rows[0].Kind != "key" {
				t.Fatalf("row %+v", rows[0])
			}
			rows, next, err = l.Page(ctx, next, 2)
			if err != nil || len(rows) != 2 || rows[0].Target != "k2" || next == 0 {
				t.Fatalf("page 2: %+v, %d, %v", rows, next, err)
			}
			rows, next, err = l.Page(ctx, next, 2)
			if err != nil || len(rows) != 1 || rows[0].Target != "k0" || next != 0 {
				t.Fatalf("page 3: %+v, %d, %v", rows, next, err)
			}
			// A row that cannot be inserted: nothing runs.
			ran := false
			_, err = l.Run(ctx, "ann", "wipe", "x", func(context.Context) (int, error) { ran = true; return 0, nil })
			var lerr *history.Error
			if !errors.As(err, &lerr) || lerr.Invalidated || ran {
				t.Fatalf("a kind the table refuses: %v (ran %v)", err, ran)
			}
		})
	}
}
