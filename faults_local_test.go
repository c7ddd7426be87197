//go:build faults

package cacheme_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gormcacheme/cacheme"
)

// localFaultPort returns a free port in 7500-7599, the local layer's fault
// tests' range.
func localFaultPort(t *testing.T) int {
	t.Helper()
	for p := 7500; p < 7600; p++ {
		if portFree(p) {
			return p
		}
	}
	t.Fatal("no free port in 7500-7599")
	return 0
}

// TestFaultLocalSubscriptionKilled kills the subscription of B's local
// layer (CLIENT KILL TYPE pubsub) and, while it is gone, process A
// invalidates every key B holds locally, once; nothing changes afterwards.
// Every read B starts once the invalidations returned (plus the delivery
// bound) must return the new values: B emptied its layer when it lost the
// subscription, so the messages it missed cost it nothing.
func TestFaultLocalSubscriptionKilled(t *testing.T) {
	r := startRedis(t, localFaultPort(t))
	faultLocal(t, r.client(t, time.Second), r.client(t, time.Second), func(t *testing.T, pb *cacheme.Plugin, invalidate func()) {
		_, purges := cacheme.LocalLive(pb)
		killed := time.Now()
		ok(t, r.client(t, time.Second).Do(bg, "client", "kill", "type", "pubsub").Err())
		invalidate()
		for _, n := cacheme.LocalLive(pb); n == purges; _, n = cacheme.LocalLive(pb) {
			time.Sleep(time.Millisecond)
		}
		t.Logf("B's layer emptied %v after the kill", time.Since(killed))
	})
}

// TestFaultLocalRedisRestart restarts Redis (its data lost) under B's
// local layer: A's invalidations wait for it, and the messages they
// publish may reach B before or after it subscribed again. B's layer was
// emptied when the connection broke: no value from before is served.
func TestFaultLocalRedisRestart(t *testing.T) {
	r := startRedis(t, localFaultPort(t))
	faultLocal(t, r.client(t, time.Second), r.client(t, time.Second), func(t *testing.T, pb *cacheme.Plugin, invalidate func()) {
		r.stop()
		*r = *startRedis(t, r.port)
		invalidate()
	})
}

// faultLocal runs a fault under B's local layer (B on client cb, A on ca)
// three times: B holds 50
// keys locally and reads them from 4 goroutines throughout; fault breaks
// something and calls invalidate, which bumps every key's version and has
// A invalidate them all (retrying until Redis answers).
func faultLocal(t *testing.T, ca, cb redis.UniversalClient, fault func(t *testing.T, pb *cacheme.Plugin, invalidate func())) {
	const keys, rounds = 50, 3
	prefix := uniquePrefix()
	pa := cacheme.New(cacheme.Settings{Redis: ca, Prefix: prefix, StatsInterval: -1})
	t.Cleanup(func() { _ = pa.Close(bg) })
	pb := cacheme.New(cacheme.Settings{Redis: cb, Prefix: prefix, NoStale: true, StatsInterval: -1,
		Local: cacheme.LocalSettings{MaxEntries: 1000, Heartbeat: 200 * time.Millisecond}})
	t.Cleanup(func() { _ = pb.Close(bg) })
	var versions [keys]atomic.Int64
	spec := cacheme.Spec[int, int64]{Key: func(k int) string { return fmt.Sprintf("k:%d", k) }}
	fb := mustWrap(t, pb, spec, func(_ context.Context, k int) (int64, error) { return versions[k].Load(), nil })

	var settled atomic.Int64 // unix ns after which every read must be current (0: not yet)
	var reads, violations, localHits atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Readers block a little between reads, as readers that
				// serve requests do: readers that never block saturate
				// the 2 cores, and Go's scheduler then runs the
				// subscriber (woken by the network poller) only every
				// few tens of milliseconds (see the README's "Local
				// layer").
				time.Sleep(20 * time.Microsecond)
				k := rng.IntN(keys)
				began := time.Now().UnixNano()
				want := versions[k].Load()
				s := settled.Load()
				v, err := fb(bg, k)
				if err != nil {
					continue // fail-open covers Redis down; an error is not stale
				}
				reads.Add(1)
				if s != 0 && began > s && v < want {
					if violations.Add(1) <= 5 {
						t.Errorf("key %d: read %d, %v after the invalidation of %d returned", k, v, time.Duration(began-s), want)
					}
				}
			}
		})
	}
	for round := range rounds {
		settled.Store(0)
		// Warm: every key in B's layer.
		waitLocalFor(t, pb, 10*time.Second)
		for k := range keys {
			deadline := time.Now().Add(10 * time.Second)
			for !cacheme.LocalHas(pb, fmt.Sprintf("k:%d", k)) {
				if time.Now().After(deadline) {
					t.Fatalf("round %d: key %d never entered B's local layer", round, k)
				}
				_, _ = fb(bg, k)
				time.Sleep(time.Millisecond)
			}
		}
		hitsBefore := pb.Stats().Total.LocalHits
		_, purges := cacheme.LocalLive(pb)
		fault(t, pb, func() {
			for k := range keys {
				versions[k].Add(1)
			}
			all := make([]string, keys)
			for k := range keys {
				all[k] = fmt.Sprintf("k:%d", k)
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				_, err := pa.InvalidateKeys(bg, all...)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("round %d: A cannot invalidate: %v", round, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			settled.Store(time.Now().Add(localDeliveryBound).UnixNano())
		})
		// Reads go on for a while after the fault; the layer comes back.
		time.Sleep(time.Second)
		_, after := cacheme.LocalLive(pb)
		if after <= purges {
			t.Fatalf("round %d: B's layer was not emptied after the fault (purges %d, then %d)", round, purges, after)
		}
		localHits.Add(pb.Stats().Total.LocalHits - hitsBefore)
	}
	close(stop)
	wg.Wait()
	t.Logf("%d rounds: %d reads (%d local hits), %d violations", rounds, reads.Load(), localHits.Load(), violations.Load())
	if violations.Load() > 0 {
		t.Fatalf("%d reads returned a value invalidated more than %v before they started", violations.Load(), localDeliveryBound)
	}
}

// waitLocalFor waits until p's local layer serves.
func waitLocalFor(t *testing.T, p *cacheme.Plugin, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for live, _ := cacheme.LocalLive(p); !live; live, _ = cacheme.LocalLive(p) {
		if time.Now().After(deadline) {
			t.Fatalf("the local layer is not live after %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFaultLocalSilentConnection swallows every reply Redis sends B (a
// proxy forwards B's requests, not the replies): B's subscription gets
// neither messages nor the replies to its pings, and no error. Within two
// heartbeats B's layer must stop serving, so an invalidation it never
// hears about costs at most that long; once replies flow again it
// subscribes anew and serves again, the new value.
func TestFaultLocalSilentConnection(t *testing.T) {
	const heartbeat = 200 * time.Millisecond
	r := startRedis(t, localFaultPort(t))
	d := startDropper(t, r.addr())
	prefix := uniquePrefix()
	// A short lease: the read B sends while its replies are swallowed
	// takes one, and its next call waits for that lease to run out.
	pa := cacheme.New(cacheme.Settings{Redis: r.client(t, time.Second), Prefix: prefix, StatsInterval: -1, LeaseTTL: 500 * time.Millisecond})
	t.Cleanup(func() { _ = pa.Close(bg) })
	pb := cacheme.New(cacheme.Settings{Redis: dialRedis(t, d.addr(), time.Second), Prefix: prefix, NoStale: true,
		StatsInterval: -1, OpTimeout: 100 * time.Millisecond, LeaseTTL: 500 * time.Millisecond,
		Local: cacheme.LocalSettings{MaxEntries: 100, Heartbeat: heartbeat}})
	t.Cleanup(func() { _ = pb.Close(bg) })
	var version atomic.Int64
	version.Store(1)
	f := mustWrap(t, pb, cacheme.Spec[int, int64]{Key: func(int) string { return "silent" }},
		func(context.Context, int) (int64, error) { return version.Load(), nil })
	waitLocalFor(t, pb, 10*time.Second)
	for !cacheme.LocalHas(pb, "silent") {
		_, err := f(bg, 0)
		ok(t, err)
	}
	d.drop.Store(true)
	dropped := time.Now()
	version.Store(2)
	_, err := pa.InvalidateKeys(bg, "silent")
	ok(t, err)
	// Until B notices, it may serve 1 from its memory; not after.
	for live, _ := cacheme.LocalLive(pb); live; live, _ = cacheme.LocalLive(pb) {
		if time.Since(dropped) > 5*heartbeat {
			t.Fatalf("B's layer still serves %v after its connection went silent", time.Since(dropped))
		}
		time.Sleep(time.Millisecond)
	}
	noticed := time.Since(dropped)
	equals(t, cacheme.LocalHas(pb, "silent"), false)
	v, err := f(bg, 0) // Redis times out: fail-open, computed
	ok(t, err)
	equals(t, v, int64(2))
	d.drop.Store(false)
	d.reset() // the swallowed replies left B's connections out of step
	resumed := time.Now()
	waitLocalFor(t, pb, 10*time.Second)
	t.Logf("live again %v after the replies flowed", time.Since(resumed))
	for range 3 {
		v, err := f(bg, 0)
		ok(t, err)
		equals(t, v, int64(2))
	}
	t.Logf("B stopped serving %v after its connection went silent (heartbeat %v)", noticed.Round(time.Millisecond), heartbeat)
	if noticed > 3*heartbeat {
		t.Fatalf("B noticed after %v; want within about two heartbeats (%v)", noticed, 2*heartbeat)
	}
}

// TestFaultLocalClusterMasterKilled kills (SIGKILL) the master B's
// subscription is on, in a Redis Cluster of 3 masters and 3 replicas on
// ports 7500-7599: B's layer empties when the connection breaks, its
// replica takes over (cluster-node-timeout 1 s), A's invalidations of
// keys on every master wait for it, and B subscribes again on a live
// node. No value from before is served after the invalidations returned.
func TestFaultLocalClusterMasterKilled(t *testing.T) {
	c := startClusterIn(t, 7500, 7600)
	// Runs after the clients are closed: go-redis retries the dial of a
	// dead node every second until its pool is closed, and goleak must not
	// find that goroutine still asleep.
	t.Cleanup(func() { time.Sleep(1500 * time.Millisecond) })
	client := func() *redis.ClusterClient {
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.addrs(),
			DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	ca, cb := client(), client()
	killed := false
	faultLocal(t, ca, cb, func(t *testing.T, pb *cacheme.Plugin, invalidate func()) {
		if killed { // one master only: later rounds break the subscription with CLIENT KILL
			ok(t, c.clientOf(t, pb).Do(bg, "client", "kill", "type", "pubsub").Err())
			invalidate()
			return
		}
		killed = true
		m := c.subscriptionNode(t, pb)
		began := time.Now()
		m.stop()
		// The replica takes over; the clients learn it (go-redis reloads
		// its slots on MOVED, not on a dead node's dial errors).
		c.waitPromoted(t, m, 30*time.Second)
		promoted := time.Since(began)
		for _, cc := range []*redis.ClusterClient{ca, cb} {
			waitForever := time.Now().Add(30 * time.Second)
			for knowsMaster(cc, m.addr()) {
				if time.Now().After(waitForever) {
					t.Fatalf("the client still routes to %s", m.addr())
				}
				cc.ReloadState(bg) // asynchronous
				time.Sleep(50 * time.Millisecond)
			}
		}
		invalidate()
		t.Logf("the master %s was killed; its replica took over %v later, A's invalidations returned %v later",
			m.addr(), promoted.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	})
}

// knowsMaster reports whether cc's view of the cluster has addr as a
// master.
func knowsMaster(cc *redis.ClusterClient, addr string) bool {
	var mu sync.Mutex
	found := false
	_ = cc.ForEachMaster(bg, func(_ context.Context, n *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		found = found || n.Options().Addr == addr
		return nil
	})
	return found
}

// subscriptionNode returns the node B's subscription is connected to: the
// one that lists a client subscribed to one channel.
func (c *redisCluster) subscriptionNode(t *testing.T, pb *cacheme.Plugin) *redisProc {
	t.Helper()
	for _, n := range c.nodes {
		select {
		case <-n.done:
			continue
		default:
		}
		list, err := n.client(t, time.Second).ClientList(bg).Result()
		if err != nil {
			continue
		}
		if strings.Contains(list, " sub=1 ") {
			return n
		}
	}
	t.Fatal("no node holds B's subscription")
	return nil
}

// waitPromoted waits until a live node sees 3 masters with slots, none of
// them dead.
func (c *redisCluster) waitPromoted(t *testing.T, dead *redisProc, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, n := range c.nodes {
			if n == dead {
				continue
			}
			seen, err := nodesSeenBy(bg, t, n.addr())
			if err != nil {
				continue
			}
			masters := 0
			for _, s := range seen {
				if s.is("master") && s.slots && !s.is("fail") && !s.is("fail?") && s.addr != dead.addr() {
					masters++
				}
			}
			if masters == 3 {
				return
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replica took over from %s within %v", dead.addr(), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clientOf returns a client of the node B's subscription is on.
func (c *redisCluster) clientOf(t *testing.T, pb *cacheme.Plugin) *redis.Client {
	t.Helper()
	return c.subscriptionNode(t, pb).client(t, time.Second)
}
