package testenv

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Queries counts the statements a database driver was asked to run.
type Queries struct{ n atomic.Int64 }

// Load returns how many statements the driver saw so far.
func (q *Queries) Load() int64 { return q.n.Load() }

// CountingDB opens a database as DB does, through a driver wrapper that
// counts every statement sent to the database (queries, execs and
// prepares), so that a test can assert that a read never reached it.
func CountingDB(t testing.TB, cfg gorm.Config) (*gorm.DB, *Queries) {
	t.Helper()
	cfg.Logger = logger.Discard
	q := &Queries{}
	var dialector gorm.Dialector
	if dsn := os.Getenv("CACHEME_TEST_POSTGRES"); dsn != "" {
		dsn = Schema(t, dsn)
		dialector = postgres.New(postgres.Config{Conn: openCounted(t, "pgx", dsn, q)})
	} else {
		dsn := filepath.Join(t.TempDir(), "test.db") + "?_busy_timeout=5000&_journal_mode=WAL"
		dialector = sqlite.New(sqlite.Config{Conn: openCounted(t, "sqlite3", dsn, q), DriverName: "sqlite3"})
	}
	db, err := gorm.Open(dialector, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	return db, q
}

// counter is a driver.Connector whose connections count statements.
type counter struct {
	drv driver.Driver
	dsn string
	q   *Queries
}

// openCounted opens dsn with driverName through a counter of q.
func openCounted(t testing.TB, driverName, dsn string, q *Queries) *sql.DB {
	t.Helper()
	base, err := sql.Open(driverName, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	conn := sql.OpenDB(&counter{drv: base.Driver(), dsn: dsn, q: q})
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (c *counter) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, q: c.q}, nil
}

func (c *counter) Driver() driver.Driver { return c.drv }

type countingConn struct {
	driver.Conn
	q *Queries
}

func (c *countingConn) Prepare(query string) (driver.Stmt, error) {
	c.q.n.Add(1)
	return c.Conn.Prepare(query)
}

func (c *countingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	c.q.n.Add(1)
	if p, ok := c.Conn.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return c.Conn.Prepare(query)
}

func (c *countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	qc, ok := c.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.q.n.Add(1)
	return qc.QueryContext(ctx, query, args)
}

func (c *countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	ec, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.q.n.Add(1)
	return ec.ExecContext(ctx, query, args)
}

func (c *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if b, ok := c.Conn.(driver.ConnBeginTx); ok {
		return b.BeginTx(ctx, opts)
	}
	return c.Conn.Begin() //lint:ignore SA1019 the fallback database/sql itself uses
}

func (c *countingConn) CheckNamedValue(nv *driver.NamedValue) error {
	if v, ok := c.Conn.(driver.NamedValueChecker); ok {
		return v.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

func (c *countingConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *countingConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}
