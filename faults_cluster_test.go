//go:build faults

package cacheme_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
)

// redisCluster is a Redis Cluster of 3 masters and 3 replicas the test
// started on its own ports (cluster-node-timeout 1000 ms).
type redisCluster struct {
	nodes []*redisProc
}

func startCluster(t *testing.T) *redisCluster {
	t.Helper()
	return startClusterIn(t, 7100, 7200)
}

// startClusterIn starts the cluster on 6 free ports in [lo, hi).
func startClusterIn(t *testing.T, lo, hi int) *redisCluster {
	t.Helper()
	base := 0
	for b := lo; b+6 <= hi && base == 0; b += 6 {
		free := true
		for p := b; p < b+6 && free; p++ {
			free = portFree(p) && portFree(p+10000) // the cluster bus
		}
		if free {
			base = b
		}
	}
	if base == 0 {
		t.Fatalf("no 6 free ports (and bus ports) in %d-%d", lo, hi-1)
	}
	c := &redisCluster{}
	var addrs []string
	for i := range 6 {
		n := startRedis(t, base+i, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000")
		c.nodes = append(c.nodes, n)
		addrs = append(addrs, n.addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.waitHealthy(t, nil, 30*time.Second)
	return c
}

func (c *redisCluster) addrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.addr())
	}
	return out
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr, master string
	flags            []string
	slots            bool
}

func (n clusterNode) is(flag string) bool {
	for _, f := range n.flags {
		if f == flag {
			return true
		}
	}
	return false
}

// nodesSeenBy returns the cluster as the node at addr sees it.
func nodesSeenBy(ctx context.Context, t testing.TB, addr string) ([]clusterNode, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond})
	defer c.Close()
	s, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []clusterNode
	for line := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		out = append(out, clusterNode{id: f[0], addr: addr, flags: strings.Split(f[2], ","), master: f[3], slots: len(f) > 8})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out, nil
}

// info returns a section of INFO of the node at addr.
func nodeInfo(ctx context.Context, addr, section string) string {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond})
	defer c.Close()
	s, _ := c.Info(ctx, section).Result()
	return s
}

// waitHealthy waits until every node (but skip) says cluster_state:ok and
// sees 3 masters with slots and no failed node, and every replica's link
// to its master is up.
func (c *redisCluster) waitHealthy(t *testing.T, skip *redisProc, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	var why string
	for time.Now().Before(deadline) {
		why = c.unhealthy(ctx, t, skip)
		if why == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the cluster is not healthy after %v: %s", timeout, why)
}

func (c *redisCluster) unhealthy(ctx context.Context, t *testing.T, skip *redisProc) string {
	for _, n := range c.nodes {
		if n == skip {
			continue
		}
		if s := nodeInfo(ctx, n.addr(), "replication"); strings.Contains(s, "role:slave") && !strings.Contains(s, "master_link_status:up") {
			return n.addr() + ": replica link down"
		}
		c := redis.NewClient(&redis.Options{Addr: n.addr(), MaxRetries: -1, ReadTimeout: 300 * time.Millisecond})
		info, err := c.ClusterInfo(ctx).Result()
		c.Close()
		if err != nil || !strings.Contains(info, "cluster_state:ok") {
			return fmt.Sprintf("%s: cluster info %v %q", n.addr(), err, info)
		}
		seen, err := nodesSeenBy(ctx, t, n.addr())
		if err != nil {
			return err.Error()
		}
		masters := 0
		for _, s := range seen {
			if s.is("fail") || s.is("fail?") {
				return fmt.Sprintf("%s sees %s as failed", n.addr(), s.addr)
			}
			if s.is("master") && s.slots {
				masters++
			}
		}
		if len(seen) != 6 || masters != 3 {
			return fmt.Sprintf("%s sees %d nodes, %d masters with slots", n.addr(), len(seen), masters)
		}
	}
	return ""
}

// pair returns a master and its replica.
func (c *redisCluster) pair(t *testing.T) (master, replica *redisProc) {
	t.Helper()
	seen, err := nodesSeenBy(context.Background(), t, c.nodes[0].addr())
	ok(t, err)
	byAddr := map[string]*redisProc{}
	for _, n := range c.nodes {
		byAddr[n.addr()] = n
	}
	for _, m := range seen {
		if !m.is("master") || !m.slots {
			continue
		}
		for _, r := range seen {
			if r.master == m.id && r.is("slave") {
				return byAddr[m.addr], byAddr[r.addr]
			}
		}
	}
	t.Fatalf("no master with a replica in %+v", seen)
	return nil, nil
}

// waitRole waits until the node's INFO replication contains every want.
func waitRole(t *testing.T, n *redisProc, timeout time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := nodeInfo(context.Background(), n.addr(), "replication")
		all := true
		for _, w := range want {
			all = all && strings.Contains(s, w)
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %v after %v:\n%s", n.addr(), want, timeout, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The TestFaultCluster tests run writers and readers on a Redis Cluster
// of 3 masters and 3 replicas that loses a master: by a graceful failover
// (CLUSTER FAILOVER on its replica), or a forced one (the master frozen
// with SIGSTOP, its replica promoted with CLUSTER FAILOVER TAKEOVER, the
// old master thawed, which becomes a replica). After recovery every row's
// cached read must equal the database where the settings promise it; the
// stale reads of the fault window are reported.
func TestFaultClusterGracefulFailover(t *testing.T) {
	faultClusterFailover(t, false, 0, true, true)
}

// With WaitReplicas 0 an acknowledged invalidation the frozen master had
// not replicated yet is lost: the figures are logged, not asserted.
func TestFaultClusterForcedFailoverWait0(t *testing.T) {
	faultClusterFailover(t, true, 0, false, false)
}

func TestFaultClusterForcedFailoverWait0Outbox(t *testing.T) {
	faultClusterFailover(t, true, 0, true, false)
}

// With WaitReplicas 1 and the outbox an invalidation counts as delivered
// only once a replica has it: 0 stale rows after recovery.
func TestFaultClusterForcedFailoverWait1Outbox(t *testing.T) {
	faultClusterFailover(t, true, 1, true, true)
}

func faultClusterFailover(t *testing.T, forced bool, waitReplicas int, outbox, strict bool) {
	const (
		rows    = 24
		writers = 4
		readers = 3
		timeout = 300 * time.Millisecond
	)
	cl := startCluster(t)
	dialect, dsn := outboxDSN(t)
	if dialect == "sqlite" {
		dsn += "&_txlock=immediate"
	}
	newClient := func() *redis.ClusterClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.addrs(), DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout})
		t.Cleanup(func() { c.Close() })
		return c
	}
	db := openOutboxDB(t, dialect, dsn)
	rdb := newClient()
	rec := &errRecorder{}
	s := cacheme.Settings{NoStale: true, Outbox: outbox, WaitReplicas: waitReplicas, WaitTimeout: 200 * time.Millisecond,
		FlushTimeout: 500 * time.Millisecond, ReplayInterval: 300 * time.Millisecond, ErrorHook: rec.Hook}
	p := newPluginOn(t, rdb, s)
	ok(t, db.Use(p))
	read := versionReader(t, p, db)
	ids := createVersionRows(t, db, rows)
	h := newHistory(rows)
	var phase atomic.Int32 // 0 before the fault, 1 from the fault to the recovery
	var stale [2]atomic.Int64
	var reads [2]atomic.Int64

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var writeErrs atomic.Int64
	for w := range writers {
		wg.Go(func() {
			v := int64(0)
			for ctx.Err() == nil {
				v++
				for row := w; row < rows; row += writers {
					if err := writeVersion(context.Background(), db, ids[row], v); err != nil {
						writeErrs.Add(1)
						continue
					}
					h.wrote(row, v)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	for range readers {
		wg.Go(func() {
			for ctx.Err() == nil {
				row := rand.IntN(rows)
				ph := phase.Load()
				if h.read(context.Background(), row, func(ctx context.Context) (int64, error) { return read(ctx, ids[row]) }) {
					stale[ph].Add(1)
				}
				reads[ph].Add(1)
			}
		})
	}

	time.Sleep(time.Second)
	m, r := cl.pair(t)
	phase.Store(1)
	start := time.Now()
	if forced {
		m.pause(t)
		ok(t, dialRedis(t, r.addr(), time.Second).Do(bg, "cluster", "failover", "takeover").Err())
		waitRole(t, r, 10*time.Second, "role:master")
		time.Sleep(1500 * time.Millisecond) // the fault window: the old master is frozen
		m.resume(t)
		waitRole(t, m, 20*time.Second, "role:slave", "master_link_status:up")
	} else {
		ok(t, dialRedis(t, r.addr(), time.Second).Do(bg, "cluster", "failover").Err())
		waitRole(t, r, 10*time.Second, "role:master")
		waitRole(t, m, 20*time.Second, "role:slave", "master_link_status:up")
	}
	cl.waitHealthy(t, nil, 30*time.Second)
	rdb.ReloadState(bg)
	recovered := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	closeCtx, closeCancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer closeCancel()
	ok(t, p.Close(closeCtx)) // waits for the invalidations still running
	notDelivered, kept := lostReports(rec), keptReports(rec)
	replayedBefore := p.Stats().Total.Replayed

	// After recovery: a fresh process (plugin, client, pool) replays the
	// outbox, then every row's cached read must equal the database.
	db2 := openOutboxDB(t, dialect, dsn)
	s.ErrorHook, s.Prefix = nil, p.Settings().Prefix
	p2 := newPluginOn(t, newClient(), s)
	ok(t, db2.Use(p2))
	replayed := 0
	if outbox {
		replayed = replayAll(t, p2, db2, 20*time.Second)
	}
	read2 := versionReader(t, p2, db2)
	staleAfter := 0
	for i, id := range ids {
		want, err := dbVersion(bg, db2, id)
		ok(t, err)
		for range 2 { // the first read may compute; the second is a hit
			got, err := read2(bg, id)
			ok(t, err)
			if got != want {
				staleAfter++
				t.Logf("row %d: cached version %d, database %d", i, got, want)
				break
			}
		}
	}
	kind := "graceful"
	if forced {
		kind = "forced"
	}
	t.Logf("cluster %s failover (WaitReplicas %d, Outbox %v): recovered in %v; %d writes (%d failed), %d reads checked; stale reads: %d of %d before the fault, %d of %d during the fault window; %d invalidations reported not delivered (%d kept by the outbox), %d replayed by the writing plugin and %d after recovery; stale after recovery: %d of %d rows",
		kind, waitReplicas, outbox, recovered.Round(time.Millisecond), h.writes.Load(), writeErrs.Load(), h.ops.Load(),
		stale[0].Load(), reads[0].Load(), stale[1].Load(), reads[1].Load(), notDelivered, kept, replayedBefore, replayed, staleAfter, rows)
	if ex := h.sample(); len(ex) > 0 {
		t.Logf("stale read examples: %v", ex)
	}
	if stale[0].Load() != 0 {
		t.Errorf("%d stale reads before the fault (healthy cluster); want 0", stale[0].Load())
	}
	if strict && staleAfter != 0 {
		t.Errorf("%d rows stale after recovery; want 0", staleAfter)
	}
}
