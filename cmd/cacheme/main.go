// Command cacheme is the command line of cacheme: it serves the admin page,
// applies the migrations, invalidates by key, group, tag or pattern (with a
// progress bar), shows the counters of every process and one entry, and
// runs the demo.
//
//	cacheme [--redis URL] [--db URL] [--prefix P] COMMAND
//
//	demo                      run the demo bookstore
//	admin --addr HOST:PORT    serve the admin page (basic auth)
//	migrate up|status         create or upgrade the tables, or show their version
//	invalidate key|group|tag|pattern ...
//	stats [--json]            the counters of all processes, last hour
//	inspect KEY [--json]      one entry: state, TTL, size, groups, value
//
// It is configured by flags and the environment: CACHEME_REDIS
// (redis://host:port/db, or cluster://host:port,host:port,... for a Redis
// Cluster), CACHEME_DB (a postgres:// URL or a SQLite file), CACHEME_PREFIX
// (default CM:) and CACHEME_ACTOR (who the History names; default the
// user). Without CACHEME_REDIS it runs on an in-process Redis, which lives
// only as long as the command: it first fills it by running the demo
// bookstore (on CACHEME_DB, or a fresh SQLite file), so that stats,
// inspect, invalidate and the admin page show the demo's entries and
// counters. Every command has --help.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError is a command line that cannot be run as given (exit 2).
type usageError struct{ error }

// run runs the command line args and returns the exit status: 0, 1 for a
// failure, 2 for bad usage.
func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	root := newRoot(out, errOut)
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(errOut)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(errOut, "cacheme:", err)
	var u usageError
	if errors.As(err, &u) || isUsage(err) {
		return 2
	}
	return 1
}

// isUsage reports whether err is cobra's complaint about the command line.
func isUsage(err error) bool {
	var flagErr interface{ FlagError() }
	if errors.As(err, &flagErr) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "invalid argument", "flag needs an argument"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// envOr returns the environment variable name, or def if it is unset.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func newRoot(out, errOut io.Writer) *cobra.Command {
	cfg := &config{out: out, errOut: errOut}
	root := &cobra.Command{
		Use:   "cacheme",
		Short: "Operate a cacheme cache: the admin page, migrations, invalidation, counters, entries",
		Long: `cacheme operates the cache of applications that use the cacheme GORM plugin.

It is configured by flags and the environment:
  CACHEME_REDIS   redis://host:port/db, or cluster://host:port,host:port,... for a Redis Cluster
  CACHEME_DB      a postgres:// URL or a SQLite file: the History of invalidations (and the demo's tables)
  CACHEME_PREFIX  the applications' Redis prefix (default CM:)
  CACHEME_ACTOR   who the History names for this command's invalidations (default the user)

Without CACHEME_REDIS it runs on an in-process Redis that lives only as long
as the command, after filling it with the demo bookstore (the entries and
counters "cacheme demo" makes, on CACHEME_DB or a fresh SQLite file): so
"cacheme stats", "cacheme inspect user:2>books" or "cacheme admin" show
something meaningful with nothing running.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := root.PersistentFlags()
	f.StringVar(&cfg.redisURL, "redis", envOr("CACHEME_REDIS", ""), "Redis: redis://host:port/db or cluster://host:port,... (env CACHEME_REDIS; default: in-process, filled by the demo)")
	f.StringVar(&cfg.dbURL, "db", envOr("CACHEME_DB", ""), "database of the History: postgres:// URL or SQLite file (env CACHEME_DB)")
	f.StringVar(&cfg.prefix, "prefix", envOr("CACHEME_PREFIX", ""), "the applications' Redis prefix (env CACHEME_PREFIX; default CM:)")
	f.StringVar(&cfg.actor, "actor", envOr("CACHEME_ACTOR", ""), "who the History names (env CACHEME_ACTOR; default cli:<user>)")
	f.BoolVar(&cfg.noLog, "no-log", false, "invalidate without a History row (no database needed)")
	root.AddCommand(demoCmd(cfg), adminCmd(cfg), migrateCmd(cfg), invalidateCmd(cfg), statsCmd(cfg), inspectCmd(cfg))
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	return root
}
