package cacheme

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Schemes: the column lists that cached reads of a table are filed under
// (see conj.go), kept in Redis so that every process's writes find them.
//
// Invariant: a read registers its schemes before it reads the database,
// and a write reads them after its COMMIT. So a read that may have seen
// the rows as they were before a write has its scheme seen by that
// write's invalidation, which then marks the read's conjunction group;
// the read, whose lease predates the mark, cannot join that group
// afterwards (joinScript) and is not stored. A scheme outlives every entry
// filed under it: its score is the latest expiry of those entries plus a
// lease TTL and schemeSlack.

const (
	schemesSuffix = ":schemes"
	// schemeRefresh is how long a process trusts its own registration of
	// a scheme and skips sending it again; schemeSlack covers it in the
	// registered expiry.
	schemeRefresh = time.Second
	schemeSlack   = 2 * time.Second
)

// schemesKey returns the Redis key of table's schemes.
func (p *Plugin) schemesKey(table string) string { return p.set.Prefix + table + schemesSuffix }

// registerScript adds schemes to a table's set, each scored by when it may
// be forgotten (server time, ms; a later score wins), prunes the expired
// ones and keeps the key as long as its latest scheme. ARGV: ms to keep,
// scheme...
var registerScript = redis.NewScript(`
local tm = redis.call('TIME')
local t = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local keep = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'GT', t + keep, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. t)
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return 1
`)

// schemesScript returns a table's live schemes.
var schemesScript = redis.NewScript(`
local tm = redis.call('TIME')
return redis.call('ZRANGEBYSCORE', KEYS[1], tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000), '+inf')
`)

// schemeCache remembers the schemes this process registered lately.
type schemeCache struct {
	mu   sync.Mutex
	seen map[string]schemeSeen // table NUL scheme -> when, for how long
}

type schemeSeen struct {
	at  time.Time
	ttl time.Duration
}

// registerSchemes records the schemes of reads whose entries live for ttl,
// before those reads run (see the invariant above), in one round trip.
func (p *Plugin) registerSchemes(ctx context.Context, schemes map[string][]string, ttl time.Duration) error {
	now := time.Now()
	keep := ttl + p.set.LeaseTTL + schemeSlack
	var calls []scriptCall
	var fresh []string
	p.schemes.mu.Lock()
	tables := make([]string, 0, len(schemes))
	for t := range schemes {
		tables = append(tables, t)
	}
	sort.Strings(tables)
	for _, t := range tables {
		args := []any{ms(keep)}
		for _, sc := range schemes[t] {
			k := t + "\x00" + sc
			if s, ok := p.schemes.seen[k]; ok && now.Sub(s.at) < schemeRefresh && ttl <= s.ttl {
				continue
			}
			args = append(args, sc)
			fresh = append(fresh, k)
		}
		if len(args) > 1 {
			calls = append(calls, scriptCall{registerScript, []string{p.schemesKey(t)}, args})
		}
	}
	p.schemes.mu.Unlock()
	if len(calls) == 0 {
		return nil
	}
	if _, err := p.runWrites(ctx, calls); err != nil {
		return fmt.Errorf("cacheme: registering query schemes: %w", err)
	}
	p.schemes.mu.Lock()
	defer p.schemes.mu.Unlock()
	if p.schemes.seen == nil || len(p.schemes.seen) > 10000 {
		p.schemes.seen = map[string]schemeSeen{}
	}
	for _, k := range fresh {
		p.schemes.seen[k] = schemeSeen{at: now, ttl: ttl}
	}
	return nil
}

// readSchemes returns the live schemes of tables, in one round trip.
func (p *Plugin) readSchemes(ctx context.Context, tables []string) (map[string][]string, error) {
	if len(tables) == 0 {
		return nil, nil
	}
	calls := make([]scriptCall, len(tables))
	for i, t := range tables {
		calls[i] = scriptCall{schemesScript, []string{p.schemesKey(t)}, nil}
	}
	cmds, err := p.runPipeline(ctx, calls)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(tables))
	var errs []error
	for i, cmd := range cmds {
		s, err := cmd.StringSlice()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[tables[i]] = s
	}
	return out, errors.Join(errs...)
}
