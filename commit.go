package cacheme

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"time"

	"gorm.io/gorm"
)

// Invalidation after COMMIT.
//
// GORM has no after-commit hook, so the plugin wraps the database's
// connection pool. A transaction begun through it (GORM's implicit
// per-statement transaction, db.Transaction, db.Begin) is a *txPool that
// collects the groups its statements invalidate and invalidates them after
// its real COMMIT returns: nested transactions are savepoints of the same
// *txPool, so only the outermost commit flushes, and a rollback drops the
// collected groups. A statement run outside a transaction
// (SkipDefaultTransaction) is committed when it returns, and its groups are
// invalidated at once.

// flushRetries is how many times a failed invalidation after a commit is
// tried again, and flushBackoff the pause before the first retry (doubled
// each time).
const (
	flushRetries = 3
	flushBackoff = 20 * time.Millisecond
)

// pool wraps a GORM connection pool so that transactions begun through it
// invalidate after their commit.
type pool struct {
	gorm.ConnPool
	p *Plugin
}

// BeginTx begins a transaction whose invalidations wait for its commit.
func (c *pool) BeginTx(ctx context.Context, opts *sql.TxOptions) (gorm.ConnPool, error) {
	switch b := c.ConnPool.(type) {
	case gorm.TxBeginner:
		tx, err := b.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		return &txPool{Tx: tx, p: c.p, parent: c, ctx: context.WithoutCancel(ctx)}, nil
	case gorm.ConnPoolBeginner:
		cp, err := b.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		tx, ok := cp.(gorm.Tx)
		if !ok {
			return cp, nil
		}
		return &txPool{Tx: tx, p: c.p, parent: c, ctx: context.WithoutCancel(ctx)}, nil
	}
	return nil, gorm.ErrInvalidTransaction
}

// GetDBConn returns the underlying *sql.DB, so that db.DB() keeps working.
func (c *pool) GetDBConn() (*sql.DB, error) {
	switch v := c.ConnPool.(type) {
	case *sql.DB:
		return v, nil
	case gorm.GetDBConnector:
		return v.GetDBConn()
	}
	return nil, gorm.ErrInvalidDB
}

// txPool is a transaction that invalidates its groups after COMMIT.
type txPool struct {
	gorm.Tx
	p      *Plugin
	parent *pool           // the pool the transaction was begun on
	ctx    context.Context // the BeginTx context, without its cancellation

	mu   sync.Mutex // protects owed
	owed pending    // what the transaction's writes invalidate after commit
}

func (t *txPool) add(w *pending) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.owed.merge(w)
}

func (t *txPool) take() *pending {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.owed
	t.owed = pending{}
	return &w
}

// Commit commits, then invalidates what the transaction's writes owe. An
// invalidation failure is reported and retried, never returned: the write
// is committed.
//
// With Settings.Outbox the invalidation is first recorded in the outbox,
// in the transaction (see outbox.go); if that fails, the transaction is
// rolled back and the error returned: a commit whose invalidation could be
// lost is not made.
func (t *txPool) Commit() error {
	w := t.take()
	var id int64
	if t.p.set.Outbox && !w.empty() {
		var err error
		if id, err = t.p.outboxInsert(t.ctx, t.Tx, w); err != nil {
			_ = t.Tx.Rollback()
			return fmt.Errorf("cacheme: recording the invalidation in %s (rolled back): %w", OutboxTable, err)
		}
	}
	if err := t.Tx.Commit(); err != nil {
		return err
	}
	t.p.flush(t.ctx, w, id)
	return nil
}

// Rollback rolls back, then invalidates what the transaction's writes
// touched all the same: nothing of it was committed, so this only costs
// recomputations, but a value computed from its uncommitted rows by a
// reader that could see them cannot outlive it.
func (t *txPool) Rollback() error {
	w := t.take()
	err := t.Tx.Rollback()
	t.p.flush(t.ctx, w, 0)
	return err
}

// GetDBConn returns the *sql.DB the transaction belongs to, so that
// tx.DB() keeps working inside a transaction.
func (t *txPool) GetDBConn() (*sql.DB, error) {
	if g, ok := t.Tx.(gorm.GetDBConnector); ok {
		return g.GetDBConn()
	}
	return t.parent.GetDBConn()
}

// txOf returns the plugin transaction a statement runs in, if any. A
// PrepareStmt session of a database opened with PrepareStmt wraps its
// transactions twice.
func txOf(cp gorm.ConnPool) *txPool {
	for {
		switch v := cp.(type) {
		case *txPool:
			return v
		case *gorm.PreparedStmtTX:
			cp = v.Tx
		default:
			return nil
		}
	}
}

// wrapPool makes db's transactions invalidate after commit. It is
// idempotent.
func (p *Plugin) wrapPool(db *gorm.DB) {
	wrap := func(cp gorm.ConnPool) gorm.ConnPool {
		if _, done := cp.(*pool); done || cp == nil {
			return cp
		}
		return &pool{ConnPool: cp, p: p}
	}
	if ps, ok := db.ConnPool.(*gorm.PreparedStmtDB); ok {
		ps.ConnPool = wrap(ps.ConnPool)
	} else {
		db.ConnPool = wrap(db.ConnPool)
	}
	if db.Statement != nil {
		if ps, ok := db.Statement.ConnPool.(*gorm.PreparedStmtDB); ok {
			ps.ConnPool = wrap(ps.ConnPool)
		} else {
			db.Statement.ConnPool = db.ConnPool
		}
	}
}

// enqueue schedules the invalidation w for after the statement's commit:
// at once when the statement runs outside a transaction.
func (p *Plugin) enqueue(db *gorm.DB, w *pending) {
	if w.empty() {
		return
	}
	if t := txOf(db.Statement.ConnPool); t != nil {
		t.add(w)
		return
	}
	if _, inTx := db.Statement.ConnPool.(gorm.TxCommitter); inTx {
		// A transaction begun around the plugin's pool: its COMMIT is
		// invisible, and invalidating now would let a reader cache the
		// pre-commit rows. Fail the write; the transaction rolls back.
		db.AddError(fmt.Errorf("%w: table %s", ErrUntrackedTx, db.Statement.Table))
		return
	}
	// Committed already: the outbox row (if any) cannot share its
	// transaction, but still covers a delivery that fails.
	var id int64
	if p.set.Outbox {
		var err error
		if id, err = p.outboxInsert(db.Statement.Context, db.Statement.ConnPool, w); err != nil {
			p.report(db.Statement.Context, fmt.Errorf("cacheme: recording the invalidation in %s: %w", OutboxTable, err))
		}
	}
	p.flush(db.Statement.Context, w, id)
}

// trackConn runs before GORM begins a statement's implicit transaction. On
// a connection the plugin did not wrap (the *sql.Conn of db.Connection), it
// wraps it for the statement, so that the transaction GORM begins is one
// the plugin sees commit.
func (p *Plugin) trackConn(db *gorm.DB) {
	switch cp := db.Statement.ConnPool.(type) {
	case *pool, *txPool, *gorm.PreparedStmtDB, *gorm.PreparedStmtTX, gorm.TxCommitter:
	case gorm.TxBeginner, gorm.ConnPoolBeginner:
		db.Statement.ConnPool = &pool{ConnPool: cp, p: p}
	}
}

// flush invalidates groups after a commit, waiting at most
// Settings.FlushTimeout: an invalidation still running then (Redis hangs)
// goes on in the background, so that the committed write returns. Close
// waits for those.
// outbox is the id of the groups' outbox row, deleted once they are
// delivered (0: none).
func (p *Plugin) flush(ctx context.Context, w *pending, outbox int64) {
	if w.empty() {
		return
	}
	ctx = context.WithoutCancel(ctx)
	p.flushMu.Lock()
	if p.closed.Load() {
		// A write committed while Close ran: invalidate before it returns.
		p.flushMu.Unlock()
		p.deliver(ctx, w, outbox)
		return
	}
	p.flushes.Add(1) // before Close's Wait: see Close
	p.flushMu.Unlock()
	select {
	case p.flushing <- struct{}{}:
	default:
		// maxBackground flushes already run (Redis hangs): wait for this
		// one rather than pile up goroutines.
		defer p.flushes.Done()
		p.deliver(ctx, w, outbox)
		return
	}
	done := make(chan struct{})
	go func() {
		defer p.flushes.Done()
		defer func() { <-p.flushing }()
		defer close(done)
		p.deliver(ctx, w, outbox)
	}()
	t := time.NewTimer(p.set.FlushTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		p.report(ctx, fmt.Errorf("%w: invalidation after commit still running after %v; it goes on in the background", ErrRedis, p.set.FlushTimeout))
	}
}

// maxBackground bounds the flushes that run at once, in the background or
// not.
const maxBackground = 64

// deliver invalidates w and deletes its outbox row once it is delivered.
func (p *Plugin) deliver(ctx context.Context, w *pending, outbox int64) {
	if err := p.flushNow(ctx, w); err == nil && outbox != 0 {
		p.delivered(ctx, outbox)
	}
}

// flushNow invalidates what committed writes owe (w), on the one
// invalidation path with flushRetries retries. A failure is reported to
// the error hook (as lost, with what is left, unless the outbox keeps it)
// and counted, and returned for the outbox; the invalidation hook hears
// the groups and what they hit.
func (p *Plugin) flushNow(ctx context.Context, w *pending) error {
	groups := p.resolve(ctx, w)
	indexes := make([]string, 0, len(groups))
	for _, g := range groups {
		if k, err := p.groupKey(g); err == nil {
			indexes = append(indexes, k)
		} else {
			p.report(ctx, fmt.Errorf("cacheme: a committed write named a group the plugin cannot use: %w", err))
		}
	}
	sctx, end := p.span(ctx, OpFlush, SpanInfo{Groups: len(groups)})
	hit, err := p.invalidation(indexes, nil).run(sctx, p, flushRetries)
	end(err)
	if err != nil {
		if p.set.Outbox {
			err = fmt.Errorf("%w (the outbox keeps it for Replay)", err)
		}
		p.report(ctx, fmt.Errorf("cacheme: invalidation after commit: %w", err))
	}
	if p.set.InvalidationHook != nil {
		p.set.InvalidationHook(ctx, groups, hit)
	}
	return err
}
