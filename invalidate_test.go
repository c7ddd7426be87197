package cacheme_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/gormcacheme/cacheme"
)

// With WaitReplicas, an invalidation that fewer replicas acknowledged is
// not delivered: an error, never "0 entries hit" as a success. (The test
// servers have no replicas; the fault suite runs a Cluster with them.)
func TestInvalidateWaitReplicas(t *testing.T) {
	rdb, _ := testRedis(t)
	p := newPluginOn(t, rdb, cacheme.Settings{WaitReplicas: 1, WaitTimeout: 5 * time.Millisecond})
	f := mustWrap(t, p, cacheme.Spec[int, int]{Key: func(int) string { return "w" }, Groups: func(int, int) []string { return []string{"g"} }}, identity)
	call(t, f, 1)
	_, err := p.InvalidateGroups(bg, "g")
	isErr(t, err, cacheme.ErrRedis)
	if !strings.Contains(err.Error(), "0 of 1 replicas") || !strings.Contains(err.Error(), "not delivered") {
		t.Fatalf("got %v; want it to say 0 of 1 replicas acknowledged and the invalidation was not delivered", err)
	}
	_, err = p.InvalidateKeys(bg, "w")
	isErr(t, err, cacheme.ErrRedis)
	// Without WAIT the same invalidation is delivered.
	p2 := newPluginOn(t, rdb, cacheme.Settings{Prefix: p.Settings().Prefix})
	_, err = p2.InvalidateGroups(bg, "g")
	ok(t, err)
}

// A lost reply (the server ran the step, the client saw an error) at any
// step of an invalidation never loses it: the group's members leave it
// only once their entries are marked, so the retry redoes the work. Before
// that order, a reply lost after the set was emptied left the entries
// valid and out of every group until their TTL.
func TestInvalidateLostReply(t *testing.T) {
	for step := int64(1); step <= 3; step++ {
		t.Run(fmt.Sprintf("public, reply %d lost", step), func(t *testing.T) {
			rdb, _ := testRedis(t)
			fault := &faultHook{}
			rdb.(*redis.Client).AddHook(fault)
			p := newPluginOn(t, rdb, cacheme.Settings{})
			var c counter
			f := mustWrap(t, p, cacheme.Spec[int, int64]{Key: func(int) string { return "lr" }, Groups: func(int, int64) []string { return []string{"g"} }}, c.fn)
			equals(t, call(t, f, 0), 1)
			fault.skip.Store(step - 1) // the steps before go through
			fault.lost.Store(1)
			_, err := p.InvalidateGroups(bg, "g")
			isErr(t, err, cacheme.ErrRedis)
			_, err = p.InvalidateGroups(bg, "g") // the caller's retry
			ok(t, err)
			equals(t, call(t, f, 0), 2) // invalidated: recomputed
		})
		t.Run(fmt.Sprintf("after commit, reply %d lost", step), func(t *testing.T) {
			rdb, _ := testRedis(t)
			fault := &faultHook{}
			rdb.(*redis.Client).AddHook(fault)
			rec := &errRecorder{}
			e := newEnvOn(t, newPluginOn(t, rdb, cacheme.Settings{ErrorHook: rec.Hook}), gorm.Config{})
			seed(t, e.db)
			pr := newProbe(t, e.p, "user1", userName(e.db, 1), "User:1")
			pr.warm(t)
			fault.skip.Store(step - 1)
			fault.lost.Store(1)
			ok(t, e.db.Model(&User{ID: 1}).Update("name", "ann2").Error)
			pr.mustMiss(t, "ann2")
			if !rec.Has(errInjected) {
				t.Fatalf("reported %v; want the lost reply reported", rec.All())
			}
		})
	}
}
