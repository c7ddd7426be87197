package cacheme

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
)

// The outbox: a durable record of the invalidations committed writes owe.
//
// With Settings.Outbox, a transaction that invalidates writes one row to
// OutboxTable, in the same transaction, just before its COMMIT: the row
// commits or rolls back with the data. After the COMMIT the writing process
// delivers the invalidation and deletes the row. A row left behind (Redis
// down or stalled past the retries, the process killed between COMMIT and
// delivery) is delivered by Replay, which every plugin with the outbox on
// runs when db.Use initializes it and every Settings.ReplayInterval, and
// which deletes a row only once its invalidation is delivered.
//
// Invariant: a row is deleted only after every group it names was
// invalidated (the one invalidation path returned no error), so an
// invalidation is delivered at least once; delivering it twice only costs
// a recomputation.

// OutboxTable is the table of pending invalidations (created by the
// migrations package).
const OutboxTable = "cacheme_outbox"

// outboxRow is one pending invalidation.
type outboxRow struct {
	id   int64
	owed pending
}

// outboxInsert records w in the outbox through conn (the writing
// transaction) and returns the row's id.
func (p *Plugin) outboxInsert(ctx context.Context, conn gorm.ConnPool, w *pending) (int64, error) {
	blob, err := json.Marshal(w)
	if err != nil {
		return 0, err
	}
	now := time.Now().UnixMilli()
	q := "INSERT INTO " + OutboxTable + " (created_ms, prefix, groups) VALUES (" + p.params(3) + ")"
	if p.dialect() == "postgres" {
		var id int64
		err := conn.QueryRowContext(ctx, q+" RETURNING id", now, p.set.Prefix, string(blob)).Scan(&id)
		return id, err
	}
	res, err := conn.ExecContext(ctx, q, now, p.set.Prefix, string(blob))
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// outboxDelete deletes delivered rows.
func (p *Plugin) outboxDelete(ctx context.Context, conn interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	_, err := conn.ExecContext(ctx, "DELETE FROM "+OutboxTable+" WHERE id IN ("+p.params(len(ids))+")", args...)
	return err
}

// delivered deletes the outbox row of a delivered invalidation, through
// the database's pool. A failure is reported: Replay delivers the row
// again later, which is harmless.
func (p *Plugin) delivered(ctx context.Context, id int64) {
	sqlDB, err := p.sqlDB()
	if err == nil {
		err = p.outboxDelete(ctx, sqlDB, []int64{id})
	}
	if err != nil {
		p.report(ctx, fmt.Errorf("cacheme: deleting delivered outbox row %d (it will be delivered again): %w", id, err))
	}
}

// replayBatch bounds the rows one Replay transaction claims.
const replayBatch = 100

// Replay delivers the invalidations that committed writes left in the
// outbox (Settings.Outbox): rows of this plugin's Prefix older than twice
// Settings.FlushTimeout, which their writer may still be delivering. On
// PostgreSQL the rows are claimed with FOR UPDATE SKIP LOCKED, so that
// processes replaying at once never do the same rows; on SQLite the
// database's write lock orders them. A row is deleted once its
// invalidation is delivered; one that fails stays for the next Replay. It
// returns how many rows it delivered. The plugin runs it by itself (see
// Settings.ReplayInterval); call it to deliver at once, for example when
// Redis is back.
func (p *Plugin) Replay(ctx context.Context) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	if !p.set.Outbox {
		return 0, fmt.Errorf("%w: Replay needs Settings.Outbox", ErrInvalidSpec)
	}
	sqlDB, err := p.sqlDB()
	if err != nil {
		return 0, err
	}
	total := 0
	for {
		n, more, err := p.replayOnce(ctx, sqlDB)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// replayOnce claims, delivers and deletes one batch in one transaction. It
// reports whether a full batch was delivered (there may be more).
func (p *Plugin) replayOnce(ctx context.Context, sqlDB *sql.DB) (int, bool, error) {
	tx, err := sqlDB.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, fmt.Errorf("cacheme: replay: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	q := "SELECT id, groups FROM " + OutboxTable + " WHERE prefix = " + p.param(1) + " AND created_ms < " + p.param(2) +
		" ORDER BY id LIMIT " + strconv.Itoa(replayBatch)
	if p.dialect() == "postgres" {
		q += " FOR UPDATE SKIP LOCKED"
	}
	cutoff := time.Now().Add(-2 * p.set.FlushTimeout).UnixMilli()
	rows, err := tx.QueryContext(ctx, q, p.set.Prefix, cutoff)
	if err != nil {
		return 0, false, fmt.Errorf("cacheme: replay: %w", err)
	}
	var batch []outboxRow
	for rows.Next() {
		var r outboxRow
		var blob string
		if err := rows.Scan(&r.id, &blob); err != nil {
			rows.Close()
			return 0, false, fmt.Errorf("cacheme: replay: %w", err)
		}
		if err := json.Unmarshal([]byte(blob), &r.owed); err != nil {
			p.report(ctx, fmt.Errorf("%w: outbox row %d: %w", ErrCorrupt, r.id, err))
			r.owed = pending{} // undecodable: nothing to deliver, drop it
		}
		batch = append(batch, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, fmt.Errorf("cacheme: replay: %w", err)
	}
	var done []int64
	var errs []error
	for _, r := range batch {
		if err := p.flushNow(ctx, &r.owed); err != nil {
			errs = append(errs, err)
			continue
		}
		done = append(done, r.id)
	}
	if err := p.outboxDelete(ctx, tx, done); err != nil {
		return 0, false, fmt.Errorf("cacheme: replay: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, false, fmt.Errorf("cacheme: replay: %w", err)
	}
	p.reg.add(nil, replayed, int64(len(done)))
	return len(done), len(batch) == replayBatch && len(errs) == 0, errors.Join(errs...)
}

// replayLoop runs Replay at once and every Settings.ReplayInterval until
// Close. Failures are reported.
func (p *Plugin) replayLoop() {
	defer close(p.replayDone)
	ctx := context.Background()
	t := time.NewTicker(p.set.ReplayInterval)
	defer t.Stop()
	for {
		if _, err := p.Replay(ctx); err != nil && !errors.Is(err, ErrClosed) {
			p.report(ctx, err)
		}
		select {
		case <-p.replayStop:
			return
		case <-t.C:
		}
	}
}

// sqlDB returns the *sql.DB of the database the plugin was initialized
// with.
func (p *Plugin) sqlDB() (*sql.DB, error) {
	db := p.db()
	if db == nil {
		return nil, fmt.Errorf("%w: the outbox needs db.Use(plugin) first", ErrInvalidSpec)
	}
	return db.DB()
}

// dialect returns the name of the database's dialect ("postgres",
// "sqlite", ...).
func (p *Plugin) dialect() string {
	if db := p.db(); db != nil && db.Dialector != nil {
		return db.Dialector.Name()
	}
	return ""
}

// param returns the i-th (from 1) bind parameter of the dialect.
func (p *Plugin) param(i int) string {
	if p.dialect() == "postgres" {
		return "$" + strconv.Itoa(i)
	}
	return "?"
}

// params returns n bind parameters, comma-separated.
func (p *Plugin) params(n int) string {
	out := make([]string, n)
	for i := range out {
		out[i] = p.param(i + 1)
	}
	return strings.Join(out, ", ")
}
