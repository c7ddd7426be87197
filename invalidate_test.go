package cacheme_test

import (
	"strings"
	"testing"
	"time"

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
