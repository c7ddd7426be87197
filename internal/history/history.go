// Package history records invalidations in the cacheme_invalidations table
// (created by package migrations) and reads them back, newest first. The
// admin page and the command line both write it, so that History lists
// every invalidation an operator made, wherever they made it.
package history

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gormcacheme/cacheme/migrations"
)

// Log is the log in one database.
type Log struct {
	DB      *sql.DB
	Dialect string           // migrations.Postgres or migrations.SQLite
	Now     func() time.Time // the clock of new rows; nil: time.Now
}

// Row is one logged invalidation.
type Row struct {
	ID      int64
	Time    time.Time
	Actor   string // who made it ("" if unknown)
	Kind    string // "tag", "group", "key", "node" or "pattern"
	Target  string
	Entries int // how many entries it hit
}

// Error is a failure to write a row. Invalidated says whether the
// invalidation had run (the row's update or the commit failed).
type Error struct {
	Err         error
	Invalidated bool
}

func (e *Error) Error() string { return "log: " + e.Err.Error() }

// Unwrap returns the database's error.
func (e *Error) Unwrap() error { return e.Err }

// Run invalidates (invalidate) and logs it in one transaction: insert the
// row, invalidate, record the count, commit. If the insert fails nothing is
// invalidated; if the invalidation fails the row is rolled back. Only a
// failure of the last update or of the commit, after Redis has been
// written, leaves an invalidation without its row (an *Error with
// Invalidated set). A caller that goes away does not cancel the
// transaction between the invalidation and the commit.
func (l Log) Run(ctx context.Context, actor, kind, target string, invalidate func(context.Context) (int, error)) (int, error) {
	ctx = context.WithoutCancel(ctx)
	tx, err := l.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, &Error{Err: err}
	}
	defer func() { _ = tx.Rollback() }() // after Commit, a no-op
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	insert := "INSERT INTO " + migrations.InvalidationsTable + " (created_at, actor, kind, target, entries) VALUES (" + l.params(4) + ", 0) RETURNING id"
	update := "UPDATE " + migrations.InvalidationsTable + " SET entries = " + l.param(1) + " WHERE id = " + l.param(2)
	var id int64
	if err := tx.QueryRowContext(ctx, insert, now().UTC(), actor, kind, target).Scan(&id); err != nil {
		return 0, &Error{Err: err}
	}
	n, err := invalidate(ctx)
	if err != nil {
		return n, err
	}
	if _, err := tx.ExecContext(ctx, update, n, id); err != nil {
		return n, &Error{Err: err, Invalidated: true}
	}
	if err := tx.Commit(); err != nil {
		return n, &Error{Err: err, Invalidated: true}
	}
	return n, nil
}

// Page returns up to limit rows older than the row before (all rows when
// before is 0), newest first, and the before of the next page (0 when
// there is none).
func (l Log) Page(ctx context.Context, before int64, limit int) ([]Row, int64, error) {
	q := "SELECT id, created_at, actor, kind, target, entries FROM " + migrations.InvalidationsTable
	var args []any
	if before > 0 {
		q += " WHERE id < " + l.param(1)
		args = append(args, before)
	}
	q += " ORDER BY id DESC LIMIT " + strconv.Itoa(limit+1)
	rows, err := l.DB.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var (
			r Row
			t dbTime
		)
		if err := rows.Scan(&r.ID, &t, &r.Actor, &r.Kind, &r.Target, &r.Entries); err != nil {
			return out, 0, err
		}
		r.Time = t.Time
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return out, 0, err
	}
	var next int64
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].ID
	}
	return out, next, nil
}

func (l Log) param(i int) string {
	if l.Dialect == migrations.Postgres {
		return "$" + strconv.Itoa(i)
	}
	return "?"
}

func (l Log) params(n int) string {
	out := make([]string, n)
	for i := range out {
		out[i] = l.param(i + 1)
	}
	return strings.Join(out, ", ")
}

// dbTime scans a timestamp whichever way the driver returns it: a
// time.Time, or text (SQLite drivers that do not parse timestamps).
type dbTime struct{ time.Time }

// Scan implements sql.Scanner.
func (t *dbTime) Scan(v any) error {
	switch v := v.(type) {
	case time.Time:
		t.Time = v
		return nil
	case string:
		return t.parse(v)
	case []byte:
		return t.parse(string(v))
	case nil:
		t.Time = time.Time{}
		return nil
	}
	return fmt.Errorf("history: cannot read %T as a time", v)
}

var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999-07:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05",
}

func (t *dbTime) parse(s string) error {
	s = strings.TrimSuffix(s, " +0000 UTC")
	for _, l := range timeLayouts {
		if v, err := time.Parse(l, s); err == nil {
			t.Time = v
			return nil
		}
	}
	return fmt.Errorf("history: cannot read %q as a time", s)
}
