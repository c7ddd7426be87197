// Command demo runs a small bookstore on cacheme (package internal/demo):
// it memoizes "the books of a user" and "the users of a book", writes
// through GORM from both sides of the many-to-many relation, and checks
// after every step that exactly the affected entries were invalidated. It
// exits 0 only if every step behaved as expected.
//
// By default it runs on an embedded SQLite file and an in-process Redis
// (miniredis); --db and --redis switch to real servers:
//
//	go run ./cmd/demo
//	go run ./cmd/demo --db 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable' --redis redis://127.0.0.1:6379/0
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gormcacheme/cacheme/internal/demo"
)

func main() {
	dbURL := flag.String("db", "", "database: a SQLite file path or a postgres:// URL (default: a fresh SQLite file in a temp dir)")
	redisURL := flag.String("redis", "", "Redis URL, e.g. redis://127.0.0.1:6379/0 (default: embedded miniredis)")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, *dbURL, *redisURL); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer, dbURL, redisURL string) error {
	return demo.Run(ctx, demo.Options{Out: out, DB: dbURL, RedisURL: redisURL})
}
