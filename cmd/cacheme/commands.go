package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/gormcacheme/cacheme"
	"github.com/gormcacheme/cacheme/admin"
	"github.com/gormcacheme/cacheme/internal/demo"
	"github.com/gormcacheme/cacheme/migrations"
)

func demoCmd(c *config) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Run the demo bookstore and check every step",
		Long: `demo runs a small bookstore on cacheme: it memoizes "the books of a user" and
"the users of a book", writes through GORM from both sides of their
many-to-many relation, and checks after every step that exactly the affected
entries were invalidated. It fails if one did not behave as expected.

It runs on CACHEME_REDIS and CACHEME_DB (its tables are prefixed with
cacheme_demo_), or in-process; its keys go under --prefix when it is given,
under a fresh prefix otherwise. Its plugin publishes its counters when it
ends, so that "cacheme stats" and the admin page of the same prefix count it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo.Run(cmd.Context(), demo.Options{Out: c.out, RedisURL: c.redisURL, DB: c.dbURL, Prefix: c.prefix})
		},
	}
}

func adminCmd(c *config) *cobra.Command {
	var (
		addr, user, password string
		hosts                []string
		readOnly             bool
	)
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Serve the admin page",
		Long: `admin serves the admin page (package admin) at --addr until it is
interrupted: the counters of every process over the last hour, Browse, one
entry, invalidation by key, group, tag, node type or pattern, and History
(with CACHEME_DB, whose tables "cacheme migrate up" creates).

Requests need HTTP basic auth with --user and --password
(CACHEME_ADMIN_USER, CACHEME_ADMIN_PASSWORD); serve it over HTTPS (behind a
proxy) anywhere but on loopback. Only the host names of --allowed-host are
answered (default: localhost, 127.0.0.1, [::1]). --addr with port 0 picks a
free port; the first line printed is "serving on http://ADDR/".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if user == "" || password == "" {
				return usageError{errors.New("admin: set --user and --password (or CACHEME_ADMIN_USER and CACHEME_ADMIN_PASSWORD)")}
			}
			ctx := cmd.Context()
			if err := c.open(ctx, false); err != nil {
				return err
			}
			defer c.close(context.Background())
			h, err := admin.New(c.p, admin.Options{
				BasicAuth:    &admin.BasicAuth{User: user, Password: password},
				AllowedHosts: hosts,
				ReadOnly:     readOnly,
				DB:           c.db,
				Dialect:      c.dialect,
			})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(c.out, "serving on http://%s/\n", ln.Addr())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			select {
			case err := <-done:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				return err
			}
			<-done
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on")
	f.StringVar(&user, "user", envOr("CACHEME_ADMIN_USER", ""), "basic-auth user (env CACHEME_ADMIN_USER)")
	f.StringVar(&password, "password", envOr("CACHEME_ADMIN_PASSWORD", ""), "basic-auth password (env CACHEME_ADMIN_PASSWORD)")
	f.StringSliceVar(&hosts, "allowed-host", nil, "host name the page answers to (repeat; default loopback names)")
	f.BoolVar(&readOnly, "read-only", false, "show, never invalidate")
	return cmd
}

func migrateCmd(c *config) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade cacheme's tables (up), or show their version (status)",
		Long: `migrate up creates or upgrades the tables of CACHEME_DB that cacheme needs
(the History of invalidations and the outbox; package migrations), and is
idempotent. migrate status prints the version of those tables and the
latest one.`,
	}
	up := &cobra.Command{
		Use:   "up",
		Short: "Bring the tables up to the latest version",
		Long:  "up applies the missing steps, each in a transaction, and prints the version reached.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := c.open(ctx, true); err != nil {
				return err
			}
			defer c.close(context.Background())
			if err := migrations.Up(ctx, c.db, c.dialect); err != nil {
				return err
			}
			return status(ctx, c)
		},
	}
	st := &cobra.Command{
		Use:   "status",
		Short: "Print the tables' version",
		Long:  "status prints the version of the tables (0: none yet) and the latest one; it changes nothing.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := c.open(ctx, true); err != nil {
				return err
			}
			defer c.close(context.Background())
			return status(ctx, c)
		},
	}
	cmd.AddCommand(up, st)
	return cmd
}

func status(ctx context.Context, c *config) error {
	v, err := migrations.Version(ctx, c.db, c.dialect)
	if err != nil {
		return err
	}
	state := "up to date"
	if v < migrations.Latest {
		state = "run \"cacheme migrate up\""
	}
	fmt.Fprintf(c.out, "%s: version %d of %d (%s)\n", c.dialect, v, migrations.Latest, state)
	return nil
}

func invalidateCmd(c *config) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "invalidate",
		Short: "Invalidate entries by key, group, tag or pattern",
		Long: `invalidate invalidates cache entries through the plugin's one invalidation
path (leases revoked, stale values kept as configured) and prints how many
held a valid value or were being computed. With a database (CACHEME_DB, or
the in-process default) and without --no-log, each invalidation is recorded
in the History (who: --actor; when; what; how many), in the same
transaction.`,
	}
	simple := func(kind, use, short, long string, do func(ctx context.Context, targets []string) (int, error)) *cobra.Command {
		return &cobra.Command{
			Use: use, Short: short, Long: long,
			Args: cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx := cmd.Context()
				if err := c.open(ctx, false); err != nil {
					return err
				}
				defer c.close(context.Background())
				total := 0
				for _, t := range args {
					n, err := c.logged(ctx, kind, t, func(ctx context.Context) (int, error) { return do(ctx, []string{t}) })
					if err != nil {
						return fmt.Errorf("%s %q: %w", kind, t, err)
					}
					fmt.Fprintf(c.out, "%s %s: %d entries invalidated\n", kind, t, n)
					total += n
				}
				return nil
			},
		}
	}
	key := simple("key", "key KEY...", "Invalidate keys",
		`key invalidates each KEY: "hash>field" that entry, "hash" every field of the hash.`,
		func(ctx context.Context, t []string) (int, error) { return c.p.InvalidateKeys(ctx, t...) })
	group := simple("group", "group GROUP...", "Invalidate every member of invalidation groups",
		`group invalidates every member of each invalidation GROUP (e.g. User:12:books).`,
		func(ctx context.Context, t []string) (int, error) { return c.p.InvalidateGroups(ctx, t...) })
	tag := simple("tag", "tag TAG...", "Invalidate every entry of tags",
		`tag invalidates every entry stored under each TAG (a memoized function's tag, a
node type's name, a table's): the tag need not be registered here, it is read
from Redis.`,
		func(ctx context.Context, t []string) (int, error) { return c.p.InvalidateStoredTag(ctx, t[0]) })

	var dryRun, all, quiet bool
	pattern := &cobra.Command{
		Use:   "pattern GLOB",
		Short: "Invalidate the entries whose keys match a glob",
		Long: `pattern invalidates the entries whose keys match GLOB, a Redis glob over keys
without the prefix (* ? [a-z] [^a], \ escapes): "book:*" every entry of the
hashes "book:...", "user:*>books" only their field "books". It walks the
keyspace with SCAN (MATCH within the prefix, COUNT 1000) on every master,
invalidating what each step finds, and shows a progress bar on stderr (the
keys walked of the database's size; --quiet hides it).

--dry-run only counts. A GLOB that covers the whole namespace ("*") needs
--all.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			glob := args[0]
			if cacheme.PatternCoversAll(glob) && !all && !dryRun {
				return usageError{fmt.Errorf("pattern %q covers the whole namespace: pass --all to invalidate everything under the prefix (or --dry-run to count)", glob)}
			}
			ctx := cmd.Context()
			if err := c.open(ctx, false); err != nil {
				return err
			}
			defer c.close(context.Background())
			var bar *progressbar.ProgressBar
			steps := 0
			progress := func(done, total int) {
				steps++
				if quiet {
					return
				}
				if bar == nil {
					bar = progressbar.NewOptions(max(total, 1),
						progressbar.OptionSetWriter(c.errOut),
						progressbar.OptionSetDescription("walking "+c.prefix+glob),
						progressbar.OptionShowCount(),
						progressbar.OptionSetPredictTime(true),
						progressbar.OptionThrottle(100*time.Millisecond),
						progressbar.OptionOnCompletion(func() { fmt.Fprintln(c.errOut) }),
					)
				}
				_ = bar.Set(done)
			}
			start := time.Now()
			if dryRun {
				n, err := c.p.InvalidatePattern(ctx, glob, true, progress)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.out, "pattern %s: %d entries match (dry run: nothing invalidated; %d steps, %v)\n", glob, n, steps, time.Since(start).Round(time.Millisecond))
				return nil
			}
			n, err := c.logged(ctx, "pattern", glob, func(ctx context.Context) (int, error) {
				return c.p.InvalidatePattern(ctx, glob, false, progress)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.out, "pattern %s: %d entries invalidated (%d steps, %v)\n", glob, n, steps, time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	pattern.Flags().BoolVar(&dryRun, "dry-run", false, "only count the entries that would be invalidated")
	pattern.Flags().BoolVar(&all, "all", false, "confirm a pattern that covers the whole namespace")
	pattern.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	cmd.AddCommand(key, group, tag, pattern)
	return cmd
}

func statsCmd(c *config) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "The counters of every process, over the last hour",
		Long: `stats prints the counters every process using the prefix published over the
last hour (cacheme.FleetStats): overall, then per tag (function, node type,
table), with the share of calls served from the cache. --json prints them,
and the totals per minute, as JSON.

Processes publish every StatsInterval (10s by default) while active, and
when they close. On the in-process default, these are the demo's counters.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if err := c.open(ctx, false); err != nil {
				return err
			}
			defer c.close(context.Background())
			f, err := c.p.FleetStats(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(c, f)
			}
			return writeTable(c, f)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// counters returns c as a map of its counters' names.
func counters(c cacheme.Counters) map[string]int64 {
	out := map[string]int64{}
	for i, v := range c.Values() {
		out[cacheme.CounterNames()[i]] = v
	}
	return out
}

// hitRatio is the share of calls served from the cache, -1 without calls.
func hitRatio(c cacheme.Counters) float64 {
	served := c.Hits + c.LocalHits + c.Stale
	if served+c.Misses == 0 {
		return -1
	}
	return float64(served) / float64(served+c.Misses)
}

func writeJSON(c *config, f cacheme.Fleet) error {
	type tag struct {
		Tag      string           `json:"tag"`
		Kind     string           `json:"kind"`
		Counters map[string]int64 `json:"counters"`
	}
	type minute struct {
		Start    time.Time        `json:"start"`
		Counters map[string]int64 `json:"counters"`
	}
	doc := struct {
		Prefix    string           `json:"prefix"`
		Window    string           `json:"window"`
		Processes int              `json:"processes"`
		Total     map[string]int64 `json:"total"`
		HitRatio  float64          `json:"hit_ratio"`
		Tags      []tag            `json:"tags"`
		Minutes   []minute         `json:"minutes"`
	}{Prefix: c.prefix, Window: cacheme.FleetWindow.String(), Processes: f.Processes, Total: counters(f.Total), HitRatio: hitRatio(f.Total), Tags: []tag{}}
	for _, name := range sortedTags(f) {
		doc.Tags = append(doc.Tags, tag{name, string(f.Kinds[name]), counters(f.Tags[name])})
	}
	for _, m := range f.Minutes {
		if m.Counters != (cacheme.Counters{}) {
			doc.Minutes = append(doc.Minutes, minute{m.Start.UTC(), counters(m.Counters)})
		}
	}
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

func sortedTags(f cacheme.Fleet) []string {
	names := make([]string, 0, len(f.Tags))
	for t := range f.Tags {
		names = append(names, t)
	}
	sort.Strings(names)
	return names
}

// tableColumns are the counters the table shows.
var tableColumns = []string{"hits", "local_hits", "misses", "stale", "herd_waits", "invalidations", "redis_errors", "loader_errors"}

func writeTable(c *config, f cacheme.Fleet) error {
	procs := "processes"
	if f.Processes == 1 {
		procs = "process"
	}
	fmt.Fprintf(c.out, "prefix %s, last %v: %d %s published\n\n", c.prefix, cacheme.FleetWindow, f.Processes, procs)
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "tag\tkind\t%s\tserved from cache\t\n", strings.Join(tableColumns, "\t"))
	row := func(name, kind string, cs cacheme.Counters) {
		m := counters(cs)
		vals := make([]string, len(tableColumns))
		for i, col := range tableColumns {
			vals[i] = fmt.Sprint(m[col])
		}
		ratio := "-"
		if r := hitRatio(cs); r >= 0 {
			ratio = fmt.Sprintf("%.1f%%", 100*r)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t\n", name, kind, strings.Join(vals, "\t"), ratio)
	}
	row("(all)", "", f.Total)
	for _, name := range sortedTags(f) {
		row(name, string(f.Kinds[name]), f.Tags[name])
	}
	return w.Flush()
}

func inspectCmd(c *config) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect KEY",
		Short: "Show one entry: state, TTL, size, groups, value",
		Long: `inspect shows the entry KEY ("hash>field", or "hash" for its field "base"):
whether it is valid, stale (invalidated, kept for stale serving), expired or
absent, whether a computation holds its lease, its TTL, size, groups, and its
value decoded as JSON. --json prints it as JSON.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := c.open(ctx, false); err != nil {
				return err
			}
			defer c.close(context.Background())
			in, err := c.p.Inspect(ctx, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(c.out)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Key        string   `json:"key"`
					RedisKey   string   `json:"redis_key"`
					Field      string   `json:"field"`
					State      string   `json:"state"`
					Leased     bool     `json:"leased"`
					TTLMs      int64    `json:"ttl_ms"`
					Size       int      `json:"size"`
					Groups     []string `json:"groups"`
					Preview    string   `json:"preview,omitempty"`
					PreviewErr string   `json:"preview_error,omitempty"`
				}{in.Key, in.RedisKey, in.Field, in.State.String(), in.Leased, in.TTL.Milliseconds(), in.Size, nonNil(in.Groups), in.Preview, in.PreviewErr})
			}
			w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "key\t%s\n", in.Key)
			fmt.Fprintf(w, "redis key\t%s (field %s)\n", in.RedisKey, in.Field)
			state := in.State.String()
			if in.Leased {
				state += fmt.Sprintf(", leased (%v left)", in.LeaseTTL.Round(time.Millisecond))
			}
			fmt.Fprintf(w, "state\t%s\n", state)
			fmt.Fprintf(w, "ttl\t%v\n", in.TTL.Round(time.Second))
			fmt.Fprintf(w, "size\t%d bytes\n", in.Size)
			fmt.Fprintf(w, "groups\t%s\n", strings.Join(in.Groups, ", "))
			switch {
			case in.Preview != "":
				fmt.Fprintf(w, "value\t%s\n", in.Preview)
			case in.PreviewErr != "":
				fmt.Fprintf(w, "value\t(%s)\n", in.PreviewErr)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
