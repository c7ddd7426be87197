package cacheme

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// read statuses returned by readScript.
const (
	statusAbsent = 0
	statusHit    = 1
	statusStale  = 2
	statusWait   = 3
	statusLease  = 4

	// statusCorruptMeta is added to a status when the entry's expiry or
	// lease time was corrupt (not a number); readScript repaired it.
	statusCorruptMeta = 16
)

// readResult is what one read of an entry found.
type readResult struct {
	status      int
	value       []byte
	groups      []string // statusHit, statusStale: the groups the value joined, if asked
	leaseAt     int64    // statusLease: the server time of the lease, in microseconds
	corruptMeta bool     // the entry's metadata was corrupt (and repaired)
}

// ms converts a duration to whole milliseconds, rounding up.
func ms(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// redisErr wraps an error from Redis with ErrRedis and what was being done.
func redisErr(op string, key string, err error) error {
	return fmt.Errorf("%w: %s %s: %w", ErrRedis, op, key, err)
}

// read runs readScript: one round trip. acquire false only peeks; groups
// asks for the groups of a value found.
func (p *Plugin) read(ctx context.Context, e entry, stale bool, token string, acquire, groups bool) (readResult, error) {
	var res []any
	err := p.bounded(ctx, func(ctx context.Context) error {
		var err error
		res, err = readScript.Run(ctx, p.rdb, []string{e.hash},
			e.field, flag(stale), token, ms(p.set.LeaseTTL), flag(acquire), flag(groups)).Slice()
		return err
	})
	if err != nil {
		return readResult{}, redisErr("read", e.String(), err)
	}
	if len(res) == 0 {
		return readResult{}, redisErr("read", e.String(), errors.New("empty reply"))
	}
	st, _ := res[0].(int64)
	out := readResult{status: int(st &^ statusCorruptMeta), corruptMeta: st&statusCorruptMeta != 0}
	if len(res) > 1 {
		s, _ := res[1].(string)
		if out.status == statusLease {
			out.leaseAt, _ = strconv.ParseInt(s, 10, 64)
		} else {
			out.value = []byte(s)
		}
	}
	if len(res) > 2 {
		if g, _ := res[2].(string); g != "" {
			out.groups = strings.Split(g, groupSep)
		}
	}
	return out, nil
}

// store runs storeScript and reports whether the value was stored. Corrupt
// metadata of the hash that the script repaired is counted (overall: the
// hash is not one tag's) and reported.
// keep is how long an invalidation keeps the value for stale serving (0:
// it deletes the value); groups are the group names the value joined.
func (p *Plugin) store(ctx context.Context, e entry, token string, value []byte, ttl, keep time.Duration, groups []string) (bool, error) {
	var n int
	err := p.bounded(ctx, func(ctx context.Context) error {
		var err error
		n, err = storeScript.Run(ctx, p.rdb, []string{e.hash}, e.field, token, value, ms(ttl), ms(keep),
			strings.Join(groups, groupSep)).Int()
		return err
	})
	if err != nil {
		return false, redisErr("store", e.String(), err)
	}
	if n == 2 {
		p.reg.add(nil, corrupt, 1)
		p.report(ctx, fmt.Errorf("%w: metadata of hash %s (dropped)", ErrCorrupt, e.hash))
	}
	return n >= 1, nil
}

// release gives up a lease.
func (p *Plugin) release(ctx context.Context, e entry, token string) error {
	if err := p.bounded(ctx, func(ctx context.Context) error {
		return releaseScript.Run(ctx, p.rdb, []string{e.hash}, e.field, token).Err()
	}); err != nil {
		return redisErr("release", e.String(), err)
	}
	return nil
}

// scriptCall is one script invocation of a pipeline.
type scriptCall struct {
	script *redis.Script
	key    string
	args   []any
}

// runPipeline runs calls in one pipeline (one round trip; on Cluster, one
// per node in parallel) with EVALSHA. Calls that fail because the node does
// not know the script yet are sent again with EVAL, so that no call runs
// twice. The result i belongs to calls[i].
func (p *Plugin) runPipeline(ctx context.Context, calls []scriptCall) ([]*redis.Cmd, error) {
	return p.runOn(ctx, p.rdb, calls, false)
}

// maxPipeline bounds the script calls of one pipeline.
const maxPipeline = 500

// pipeliner is a client that makes pipelines: any redis.UniversalClient,
// or one node's *redis.Client.
type pipeliner interface {
	Pipeline() redis.Pipeliner
}

// runOn runs calls as runPipeline does, on c. With wait, each pipeline
// ends with WAIT (Settings.WaitReplicas), on the same connection as its
// writes, and fewer acknowledgements than asked is an error for every call.
func (p *Plugin) runOn(ctx context.Context, c pipeliner, calls []scriptCall, wait bool) ([]*redis.Cmd, error) {
	if len(calls) == 0 {
		return nil, nil
	}
	if len(calls) > maxPipeline {
		// One read deadline (the client's ReadTimeout) covers all the
		// replies of a pipeline: bound its length, so that a large
		// invalidation on a slow server does not time out as a whole.
		var cmds []*redis.Cmd
		var errs []error
		for _, chunk := range chunks(calls, maxPipeline) {
			got, err := p.runOn(ctx, c, chunk, wait)
			cmds = append(cmds, got...)
			errs = append(errs, err)
		}
		return cmds, errors.Join(errs...)
	}
	cmds := make([]*redis.Cmd, len(calls))
	var acks []*redis.IntCmd
	send := func(idx []int, first bool) {
		pipe := c.Pipeline()
		for _, i := range idx {
			c := calls[i]
			if first {
				cmds[i] = c.script.EvalSha(ctx, pipe, []string{c.key}, c.args...)
			} else {
				cmds[i] = c.script.Eval(ctx, pipe, []string{c.key}, c.args...)
			}
		}
		if wait {
			acks = append(acks, redis.NewIntCmd(ctx, "wait", p.set.WaitReplicas, p.set.WaitTimeout.Milliseconds()))
			_ = pipe.Process(ctx, acks[len(acks)-1])
		}
		_, _ = pipe.Exec(ctx)
	}
	all := make([]int, len(calls))
	for i := range all {
		all[i] = i
	}
	send(all, true)
	var retry []int
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			retry = append(retry, i)
		}
	}
	if len(retry) > 0 {
		send(retry, false)
	}
	var errs []error
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
			errs = append(errs, redisErr("script", calls[i].key, err))
		}
	}
	for _, a := range acks {
		n, err := a.Result()
		if err == nil && n < int64(p.set.WaitReplicas) {
			err = fmt.Errorf("%d of %d replicas acknowledged within %v", n, p.set.WaitReplicas, p.set.WaitTimeout)
		}
		if err != nil {
			for _, cmd := range cmds {
				if cmd.Err() == nil {
					cmd.SetErr(err)
				}
			}
			errs = append(errs, redisErr("WAIT", fmt.Sprint(p.set.WaitReplicas), err))
		}
	}
	return cmds, errors.Join(errs...)
}

// runWrites runs invalidation calls: as runPipeline does, and with
// Settings.WaitReplicas confirmed by WAIT on every connection that wrote.
// On Cluster the calls are grouped by the master that owns their key, so
// that each WAIT follows that master's writes.
func (p *Plugin) runWrites(ctx context.Context, calls []scriptCall) ([]*redis.Cmd, error) {
	if p.set.WaitReplicas == 0 || len(calls) == 0 {
		return p.runPipeline(ctx, calls)
	}
	cc, ok := p.rdb.(*redis.ClusterClient)
	if !ok {
		return p.runOn(ctx, p.rdb, calls, true)
	}
	type group struct {
		node *redis.Client
		idx  []int
	}
	var groups []*group
	byNode := map[*redis.Client]*group{}
	cmds := make([]*redis.Cmd, len(calls))
	var errs []error
	for i, c := range calls {
		node, err := cc.MasterForKey(ctx, c.key)
		if err != nil {
			cmds[i] = redis.NewCmd(ctx)
			cmds[i].SetErr(err)
			errs = append(errs, redisErr("script", c.key, err))
			continue
		}
		g := byNode[node]
		if g == nil {
			g = &group{node: node}
			byNode[node] = g
			groups = append(groups, g)
		}
		g.idx = append(g.idx, i)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub := make([]scriptCall, len(g.idx))
			for j, i := range g.idx {
				sub[j] = calls[i]
			}
			got, err := p.runOn(ctx, g.node, sub, true)
			mu.Lock()
			defer mu.Unlock()
			for j, i := range g.idx {
				cmds[i] = got[j]
			}
			if err != nil {
				errs = append(errs, err)
			}
		}()
	}
	wg.Wait()
	return cmds, errors.Join(errs...)
}

// join adds e to every index (group or tag set) in one round trip. It
// reports false if any index was invalidated after the computation started
// (at started, by this process's monotonic clock, right after its lease was
// granted at leaseAt by the entry's server): the result may be stale and
// must not be stored.
//
// On a single server (a *redis.Client) the lease and the invalidations are
// timed by one clock, so the script decides exactly. On several servers
// (Cluster, Ring) the clocks are not compared: each index tells how long
// before the script ran it was invalidated, by its own clock, and the
// computation started at most time.Since(started) before that, measured
// once the replies are in. An invalidation more recent than that is
// treated as after the start: one just before the start may cost a
// recomputation, one after it never leaves a stale value.
func (p *Plugin) join(ctx context.Context, e entry, indexes []string, ttl time.Duration, started time.Time, leaseAt int64) (bool, error) {
	at := ""
	if _, oneServer := p.rdb.(*redis.Client); oneServer && leaseAt > 0 {
		at = strconv.FormatInt(leaseAt, 10)
	}
	calls := make([]scriptCall, len(indexes))
	for i, idx := range indexes {
		calls[i] = scriptCall{joinScript, idx, []any{e.member(), ms(ttl), ms(p.set.LeaseTTL), at}}
	}
	var cmds []*redis.Cmd
	err := p.bounded(ctx, func(ctx context.Context) error {
		var err error
		cmds, err = p.runPipeline(ctx, calls)
		return err
	})
	if err != nil {
		return false, err
	}
	age := time.Since(started).Microseconds() + 1
	for _, cmd := range cmds {
		r, err := cmd.StringSlice()
		if err != nil || len(r) == 0 || r[0] != "1" {
			return false, nil
		}
		if len(r) < 3 {
			return false, nil
		}
		now, err1 := strconv.ParseInt(r[1], 10, 64)
		inv, err2 := strconv.ParseInt(r[2], 10, 64)
		if err1 != nil || err2 != nil || (at == "" && inv >= 0 && now-inv <= age) {
			return false, nil
		}
	}
	return true, nil
}

// invalidateEntries invalidates entries in one round trip (one script call
// per hash: its fields are invalidated together; an entry with an empty
// field stands for the whole hash). It returns how many entries it hit, and
// the entries whose call failed.
func (p *Plugin) invalidateEntries(ctx context.Context, entries []entry) (int, []entry, error) {
	byHash := map[string][]entry{}
	var order []string
	for _, e := range entries {
		if _, seen := byHash[e.hash]; !seen {
			order = append(order, e.hash)
		}
		byHash[e.hash] = append(byHash[e.hash], e)
	}
	calls := make([]scriptCall, 0, len(order))
	for _, h := range order {
		var args []any
		for _, e := range byHash[h] {
			if e.field == "" {
				args = nil // the whole hash
				break
			}
			args = append(args, e.field)
		}
		calls = append(calls, scriptCall{invalidateScript, h, args})
	}
	cmds, err := p.runWrites(ctx, calls)
	n := 0
	var failed []entry
	for i, cmd := range cmds {
		v, cerr := cmd.Int()
		if cerr != nil {
			failed = append(failed, byHash[order[i]]...)
			continue
		}
		n += v
	}
	return n, failed, err
}

// markedIndex is a group or tag set marked by markIndexes: its live
// members as entries, and as the (member, score) pairs to drop once those
// entries are invalidated.
type markedIndex struct {
	key     string
	entries []entry
	pairs   []any // member, score, member, score...
}

// markIndexes marks the given group or tag sets invalidated (markScript) in
// one round trip and returns their live members, and the sets whose call
// failed. The members stay in the sets (see dropMembers).
func (p *Plugin) markIndexes(ctx context.Context, indexes []string) ([]markedIndex, []string, error) {
	calls := make([]scriptCall, len(indexes))
	for i, idx := range indexes {
		calls[i] = scriptCall{markScript, idx, []any{ms(p.set.LeaseTTL)}}
	}
	cmds, err := p.runWrites(ctx, calls)
	var out []markedIndex
	var failed []string
	for i, cmd := range cmds {
		r, cerr := cmd.StringSlice()
		if cerr != nil || len(r)%2 != 0 {
			failed = append(failed, indexes[i])
			continue
		}
		m := markedIndex{key: indexes[i]}
		for j := 0; j < len(r); j += 2 {
			if r[j] == "" {
				continue // the marker
			}
			m.pairs = append(m.pairs, r[j], r[j+1])
			if en, ok := entryFromMember(r[j]); ok {
				m.entries = append(m.entries, en)
			}
		}
		out = append(out, m)
	}
	return out, failed, err
}

// dropMembers removes from each marked set the members read by
// markIndexes, each only if its score is unchanged (dropScript), in one
// round trip, and returns the sets whose call failed.
func (p *Plugin) dropMembers(ctx context.Context, marked []markedIndex) ([]string, error) {
	var calls []scriptCall
	for _, m := range marked {
		for _, chunk := range chunks(m.pairs, 2*maxParams) {
			calls = append(calls, scriptCall{dropScript, m.key, append([]any{ms(p.set.LeaseTTL)}, chunk...)})
		}
	}
	cmds, err := p.runWrites(ctx, calls)
	var failed []string
	seen := map[string]bool{}
	for i, cmd := range cmds {
		if cmd.Err() != nil && !seen[calls[i].key] {
			seen[calls[i].key] = true
			failed = append(failed, calls[i].key)
		}
	}
	return failed, err
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
