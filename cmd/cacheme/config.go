package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/internal/demo"
	"github.com/gormcacheme/cacheme/internal/history"
	"github.com/gormcacheme/cacheme/migrations"
)

// config is the command line's configuration, and what it opened.
type config struct {
	redisURL, dbURL, prefix, actor string
	noLog                          bool
	out, errOut                    io.Writer

	rdb      redis.UniversalClient
	db       *sql.DB // nil without a database
	dialect  string
	p        *cacheme.Plugin
	embedded bool // in-process Redis, filled by the demo
	closers  []func()
}

// open connects to Redis (in-process and filled by the demo without a
// URL) and, with one, to the database; close releases them. needDB makes
// a missing database an error.
func (c *config) open(ctx context.Context, needDB bool) error {
	if c.prefix == "" {
		c.prefix = cacheme.DefaultPrefix
	}
	c.embedded = c.redisURL == ""
	if c.embedded && c.dbURL == "" {
		dir, err := os.MkdirTemp("", "cacheme-cli")
		if err != nil {
			return err
		}
		c.closers = append(c.closers, func() { _ = os.RemoveAll(dir) })
		c.dbURL = filepath.Join(dir, "cacheme.db")
	}
	rdb, closeRedis, err := demo.OpenRedis(c.redisURL)
	if err != nil {
		return err
	}
	c.rdb = rdb
	c.closers = append(c.closers, closeRedis)
	if c.dbURL != "" {
		gdb, err := demo.OpenDB(c.dbURL)
		if err != nil {
			return fmt.Errorf("database: %w", err)
		}
		if c.db, err = gdb.DB(); err != nil {
			return fmt.Errorf("database: %w", err)
		}
		db := c.db
		c.closers = append(c.closers, func() { _ = db.Close() })
		c.dialect = migrations.SQLite
		if demo.IsPostgres(c.dbURL) {
			c.dialect = migrations.Postgres
		}
	} else if needDB {
		return usageError{fmt.Errorf("no database: set --db or CACHEME_DB")}
	}
	if c.embedded {
		// The demo fills the in-process Redis (its plugin publishes its
		// counters when it closes), and the History gets its table.
		if err := demo.Run(ctx, demo.Options{Redis: rdb, DB: c.dbURL, Prefix: c.prefix}); err != nil {
			return fmt.Errorf("filling the in-process Redis with the demo: %w", err)
		}
		if err := migrations.Up(ctx, c.db, c.dialect); err != nil {
			return err
		}
	}
	c.p = cacheme.New(cacheme.Settings{Redis: rdb, Prefix: c.prefix})
	return c.p.Err()
}

// close closes the plugin (publishing its counters) and what open opened.
func (c *config) close(ctx context.Context) {
	if c.p != nil {
		_ = c.p.Close(ctx)
	}
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
}

// who is the actor the History names.
func (c *config) who() string {
	if c.actor != "" {
		return c.actor
	}
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	return "cli:" + name
}

// logged runs an invalidation and, with a database (and without
// --no-log), records it in the History in the same transaction.
func (c *config) logged(ctx context.Context, kind, target string, invalidate func(context.Context) (int, error)) (int, error) {
	if c.db == nil || c.noLog {
		return invalidate(ctx)
	}
	v, err := migrations.Version(ctx, c.db, c.dialect)
	if err != nil {
		return 0, err
	}
	if v < migrations.Latest {
		return 0, fmt.Errorf("the History's table is at version %d of %d: run \"cacheme migrate up\" first, or pass --no-log", v, migrations.Latest)
	}
	return history.Log{DB: c.db, Dialect: c.dialect}.Run(ctx, c.who(), kind, target, invalidate)
}
