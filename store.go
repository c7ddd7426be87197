package cacheme

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// read statuses: of the fast path, and of readScript.
const (
	statusAbsent = 0
	statusHit    = 1
	statusStale  = 2
	statusWait   = 3
	statusLease  = 4
	statusOther  = 5 // fast path: neither valid nor absent, ask readScript

	// statusCorruptMeta is added to a status when the entry's key held
	// something that is not an entry (readScript dropped it).
	statusCorruptMeta = 16
)

// readResult is what one read of an entry found.
type readResult struct {
	status      int
	value       string        // hit, stale (and lease, if kept for stale serving): the whole stored value
	wait        time.Duration // statusWait: how long the lease has left
	corruptMeta bool          // the entry's key was corrupt (and dropped)
}

// ms converts a duration to whole milliseconds, rounding up.
func ms(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// redisErr wraps an error from Redis with ErrRedis and what was being done.
func redisErr(op string, key string, err error) error {
	return fmt.Errorf("%w: %s %s: %w", ErrRedis, op, key, err)
}

// readFast is the one round trip of a hit and of a common miss: SET key
// <lease header> NX GET PX <lease TTL>. An absent key gets this caller's
// lease (statusLease, leaseAt 0); an existing one is returned untouched:
// a valid value is a hit, anything else is for readScript (statusOther).
// A key of another type is statusOther too (readScript drops it).
func (p *Plugin) readFast(ctx context.Context, e entry, lh *leaseHeader) (readResult, error) {
	cmd := redis.NewStringCmd(ctx, "set", e.key, lh, "nx", "get", "px", p.leaseArg)
	var err error
	if p.direct(ctx) {
		err = p.rdb.Process(ctx, cmd)
	} else {
		err = p.bounded(ctx, func(ctx context.Context) error { return p.rdb.Process(ctx, cmd) })
		if errors.Is(err, errAbandoned) {
			lh.lost = true // the command may still be writing it
			return readResult{}, redisErr("read", e.String(), err)
		}
	}
	if err == nil {
		err = cmd.Err()
	}
	switch {
	case errors.Is(err, redis.Nil):
		return readResult{status: statusLease}, nil
	case err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE"):
		return readResult{status: statusOther}, nil
	case err != nil:
		return readResult{}, redisErr("read", e.String(), err)
	}
	v := cmd.Val()
	if h, ok := parseHeader(v); ok && h.state == stateValid {
		return readResult{status: statusHit, value: v}, nil
	}
	return readResult{status: statusOther}, nil
}

// readSlow runs readScript: one round trip.
func (p *Plugin) readSlow(ctx context.Context, e entry, stale bool, token string) (readResult, error) {
	var res []any
	err := p.bounded(ctx, func(ctx context.Context) error {
		var err error
		res, err = readScript.Run(ctx, p.rdb, []string{e.key}, flag(stale), token, ms(p.set.LeaseTTL)).Slice()
		return err
	})
	if err != nil {
		return readResult{}, redisErr("read", e.String(), err)
	}
	if len(res) < 2 {
		return readResult{}, redisErr("read", e.String(), errors.New("short reply"))
	}
	st, _ := res[0].(int64)
	out := readResult{status: int(st &^ statusCorruptMeta), corruptMeta: st&statusCorruptMeta != 0}
	switch out.status {
	case statusHit, statusStale:
		out.value, _ = res[1].(string)
	case statusWait:
		n, _ := res[1].(int64)
		out.wait = time.Duration(n) * time.Millisecond
	case statusLease:
		if len(res) > 2 {
			out.value, _ = res[2].(string) // the value kept for stale serving
		}
	}
	return out, nil
}

// peek reads an entry without taking a lease: its value if valid.
func (p *Plugin) peek(ctx context.Context, e entry) (string, bool, error) {
	var v string
	err := p.bounded(ctx, func(ctx context.Context) error {
		var err error
		v, err = p.rdb.Get(ctx, e.key).Result()
		return err
	})
	switch {
	case errors.Is(err, redis.Nil), err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE"):
		return "", false, nil
	case err != nil:
		return "", false, redisErr("read", e.String(), err)
	}
	if h, ok := parseHeader(v); ok && h.state == stateValid {
		return v, true, nil
	}
	return "", false, nil
}

// store runs storeScript and reports whether the value was stored, and how
// many callers of other processes wait to be woken. indexes are the sets
// the entry joins, checked and joined by the script itself (one server),
// or nil when join did it before (several servers). started is when the
// computation began, by this process's clock, and begun, if not "", the
// same moment exactly on the server's clock. When the script cannot order
// an invalidation and a SET NX lease within their millisecond, store sends
// the value again with a lower bound of started on the server's clock (one
// more round trip, after a write just before the read only); if a set
// refuses that one, store returns retryAt: the server's time then, after
// which a new computation may store with begun = retryAt (see compute).
func (p *Plugin) store(ctx context.Context, e entry, token string, value []byte, ttl time.Duration, indexes []string, started time.Time, begun string) (stored bool, waiters int, retryAt string, err error) {
	keys := make([]string, 0, 1+len(indexes))
	keys = append(keys, e.key)
	keys = append(keys, indexes...)
	for {
		var res []any
		err := p.bounded(ctx, func(ctx context.Context) error {
			var err error
			res, err = storeScript.Run(ctx, p.rdb, keys, token, value, ms(ttl), ms(p.set.LeaseTTL), begun).Slice()
			return err
		})
		replied := time.Now()
		if err != nil {
			return false, 0, "", redisErr("store", e.String(), err)
		}
		if len(res) < 2 {
			return false, 0, "", redisErr("store", e.String(), errors.New("short reply"))
		}
		status, _ := res[0].(int64)
		n, _ := res[1].(int64)
		var now string
		if len(res) > 2 {
			now, _ = res[2].(string)
		}
		switch {
		case status == 3:
			return false, int(n), now, nil
		case status != 2 || begun != "":
			return status == 1, int(n), "", nil
		}
		// The server's clock read now (µs) while the script ran, before
		// this process got its reply: the computation began at least
		// replied - started before now.
		t, err := strconv.ParseInt(now, 10, 64)
		if err != nil {
			return false, int(n), "", nil
		}
		begun = strconv.FormatInt(t-replied.Sub(started).Microseconds()-1, 10)
	}
}

// release gives up a lease (if token still holds it) and returns how many
// callers of other processes wait to be woken.
func (p *Plugin) release(ctx context.Context, e entry, token string) (int, error) {
	var n int
	if err := p.bounded(ctx, func(ctx context.Context) error {
		var err error
		n, err = releaseScript.Run(ctx, p.rdb, []string{e.key}, token).Int()
		return err
	}); err != nil {
		return 0, redisErr("release", e.String(), err)
	}
	return n, nil
}

// wake pushes n tokens to the entry's wake list, one per waiting caller
// of another process (see waitWake), in one round trip. The list expires
// after one lease TTL, so that tokens nobody took do not last.
func (p *Plugin) wake(ctx context.Context, e entry, n int) error {
	if n <= 0 {
		return nil
	}
	// Waiters are processes (one flight each); past maxWake, the rest
	// wait for the lease to run out.
	n = min(n, maxWake)
	tokens := make([]any, n)
	for i := range tokens {
		tokens[i] = "1"
	}
	k := e.wakeKey()
	err := p.bounded(ctx, func(ctx context.Context) error {
		_, err := p.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.LPush(ctx, k, tokens...)
			pipe.PExpire(ctx, k, p.set.LeaseTTL)
			return nil
		})
		return err
	})
	if err != nil {
		return redisErr("wake", e.String(), err)
	}
	return nil
}

// maxWake bounds the tokens one wake pushes.
const maxWake = 256

// waitWake blocks until the entry's wake list gets a token or d passes
// (BLPOP), at most one block: the caller's read timeout allows it, and
// the caller's context is checked between blocks. It reports whether it
// was woken.
func (p *Plugin) waitWake(ctx context.Context, e entry, d time.Duration) (bool, error) {
	if d > p.maxBlock {
		d = p.maxBlock
	}
	if d < time.Millisecond {
		d = time.Millisecond
	}
	cmd := redis.NewStringSliceCmd(ctx, "blpop", e.wakeKey(), strconv.FormatFloat(d.Seconds(), 'f', 3, 64))
	err := p.rdb.Process(ctx, cmd)
	switch {
	case errors.Is(err, redis.Nil):
		return false, nil
	case err != nil:
		return false, redisErr("wait", e.String(), err)
	}
	return true, nil
}

// maxBlock returns how long one BLPOP may block on c: half its read
// timeout (go-redis reads a plain command's reply within ReadTimeout),
// or a second when it has none.
func maxBlock(c redis.UniversalClient) time.Duration {
	rt := time.Duration(0)
	switch c := c.(type) {
	case *redis.Client:
		rt = c.Options().ReadTimeout
	case *redis.ClusterClient:
		rt = c.Options().ReadTimeout
	case *redis.Ring:
		rt = c.Options().ReadTimeout
	}
	switch {
	case rt == 0:
		rt = 3 * time.Second // go-redis's default
	case rt < 0:
		return time.Second
	}
	return max(rt/2, time.Millisecond)
}

// scriptCall is one script invocation of a pipeline.
type scriptCall struct {
	script *redis.Script
	keys   []string
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
				cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
			} else {
				cmds[i] = c.script.Eval(ctx, pipe, c.keys, c.args...)
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
			errs = append(errs, redisErr("script", calls[i].keys[0], err))
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
// On Cluster the calls are grouped by the master that owns their keys
// (one slot per call), so that each WAIT follows that master's writes.
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
		node, err := cc.MasterForKey(ctx, c.keys[0])
		if err != nil {
			cmds[i] = redis.NewCmd(ctx)
			cmds[i].SetErr(err)
			errs = append(errs, redisErr("script", c.keys[0], err))
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

// join adds e to every index (group, tag or hash-index set) in one round
// trip, on several servers (Cluster, Ring), where storeScript cannot check
// and join the sets itself. It reports false if any index was invalidated
// after the computation started (at started, by this process's monotonic
// clock): the result may be stale and must not be stored.
//
// The servers' clocks are not compared: each index tells how long before
// the script ran it was invalidated, by its own clock, and the
// computation started at most time.Since(started) before that, measured
// once the replies are in. An invalidation more recent than that is
// treated as after the start: one just before the start may cost a
// recomputation, one after it never leaves a stale value.
func (p *Plugin) join(ctx context.Context, e entry, indexes []string, ttl time.Duration, started time.Time) (bool, error) {
	calls := make([]scriptCall, len(indexes))
	for i, idx := range indexes {
		calls[i] = scriptCall{joinScript, []string{idx}, []any{e.member(), ms(ttl), ms(p.set.LeaseTTL)}}
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
		if err != nil || len(r) < 3 || r[0] != "1" {
			return false, nil
		}
		now, err1 := strconv.ParseInt(r[1], 10, 64)
		inv, err2 := strconv.ParseInt(r[2], 10, 64)
		if err1 != nil || err2 != nil || (inv >= 0 && now-inv <= age) {
			return false, nil
		}
	}
	return true, nil
}

// invalidateEntries invalidates entries in one round trip: one script call
// per batch of keys (see batches). It returns how many entries it hit, and
// the entries whose call failed.
func (p *Plugin) invalidateEntries(ctx context.Context, entries []entry) (int, []entry, error) {
	calls, batches := p.entryCalls(entries)
	cmds, err := p.runWrites(ctx, calls)
	p.evictLocal(entries)
	n, failed := entryResults(entries, batches, cmds)
	return n, failed, err
}

// entryCalls returns the invalidateScript calls of entries, and the
// entries (by index) of each call.
func (p *Plugin) entryCalls(entries []entry) ([]scriptCall, [][]int) {
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.key
	}
	batches := p.batches(keys)
	calls := make([]scriptCall, len(batches))
	for i, b := range batches {
		ks := make([]string, len(b))
		for j, k := range b {
			ks[j] = keys[k]
		}
		calls[i] = scriptCall{invalidateScript, ks, []any{p.localChannel()}}
	}
	return calls, batches
}

// entryResults reads the replies of entryCalls: how many entries were hit,
// and the entries whose call failed.
func entryResults(entries []entry, batches [][]int, cmds []*redis.Cmd) (int, []entry) {
	n := 0
	var failed []entry
	for i, cmd := range cmds {
		v, cerr := cmd.Int()
		if cerr != nil {
			for _, k := range batches[i] {
				failed = append(failed, entries[k])
			}
			continue
		}
		n += v
	}
	return n, failed
}

// markedIndex is a group, tag or hash-index set marked by markScript: its
// live members as entries, and its version then (see dropScript).
type markedIndex struct {
	key     string
	entries []entry
	version string
}

// markCalls returns the markScript calls that mark the given sets
// invalidated, and the sets (by index) of each call. The members stay in
// the sets (see dropMembers).
func (p *Plugin) markCalls(indexes []string) ([]scriptCall, [][]int) {
	batches := p.batches(indexes)
	calls := make([]scriptCall, len(batches))
	for i, b := range batches {
		ks := make([]string, len(b))
		for j, k := range b {
			ks[j] = indexes[k]
		}
		calls[i] = scriptCall{markScript, ks, []any{ms(p.set.LeaseTTL)}}
	}
	return calls, batches
}

// markResults reads the replies of markCalls: the sets' live members, and
// the sets whose call failed.
func markResults(indexes []string, batches [][]int, cmds []*redis.Cmd) ([]markedIndex, []string) {
	var out []markedIndex
	var failed []string
	for i, cmd := range cmds {
		r, cerr := cmd.Slice()
		if cerr != nil || len(r) != len(batches[i]) {
			for _, k := range batches[i] {
				failed = append(failed, indexes[k])
			}
			continue
		}
		for j, k := range batches[i] {
			ms, _ := r[j].([]any)
			if len(ms) == 0 {
				failed = append(failed, indexes[k])
				continue
			}
			m := markedIndex{key: indexes[k]}
			m.version, _ = ms[0].(string)
			m.entries = make([]entry, 0, len(ms)-1)
			for _, x := range ms[1:] {
				name, _ := x.(string)
				if name == "" {
					continue // the marker
				}
				if en, ok := entryFromMember(name); ok {
					m.entries = append(m.entries, en)
				}
			}
			out = append(out, m)
		}
	}
	return out, failed
}

// dropMembers removes from each marked set the members read by
// markScript, if no join came in between (see dropScript), in one round
// trip (one call per batch of sets), and returns the sets whose call
// failed.
func (p *Plugin) dropMembers(ctx context.Context, marked []markedIndex) ([]string, error) {
	// A set with no member read has nothing to drop.
	marked = slices.DeleteFunc(slices.Clone(marked), func(m markedIndex) bool { return len(m.entries) == 0 })
	keys := make([]string, len(marked))
	for i, m := range marked {
		keys[i] = m.key
	}
	var calls []scriptCall
	for _, b := range p.batches(keys) {
		ks := make([]string, len(b))
		args := make([]any, 1, len(b)+1)
		args[0] = ms(p.set.LeaseTTL)
		for j, i := range b {
			ks[j] = marked[i].key
			args = append(args, marked[i].version)
		}
		calls = append(calls, scriptCall{dropScript, ks, args})
	}
	cmds, err := p.runWrites(ctx, calls)
	var failed []string
	for i, cmd := range cmds {
		if cmd.Err() != nil {
			failed = append(failed, calls[i].keys...)
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
