// Package cacheme memoizes function results in Redis and invalidates them
// when GORM writes rows.
//
// # Memoizing
//
// Wrap memoizes a function by key (Spec.Key); WrapNode memoizes it by node
// (package nodes). After a miss, the result joins the invalidation groups
// its spec names (Spec.Groups, Node.InvalidNodes) and its tag. Invalidating
// a group (InvalidateGroups), a tag (InvalidateTag), a key
// (InvalidateKeys) or a node invalidates the results in it; the next call
// recomputes them.
//
//	p := cacheme.New(cacheme.Settings{Redis: rdb})
//	booksOf, err := cacheme.Wrap(p, cacheme.Spec[uint, []Book]{
//		Key:    func(id uint) string { return fmt.Sprintf("user:%d>books", id) },
//		Groups: func(id uint, _ []Book) []string { return []string{fmt.Sprintf("User:%d:books", id)} },
//	}, loadBooks)
//
// New never fails: a configuration that cannot work is returned by Err,
// by db.Use, by Wrap and WrapNode, and by every call that needs a valid
// plugin. Close drains the invalidations still running in the background.
//
// # With GORM
//
// db.Use(cacheme.New(s)) registers callbacks on create, update and delete;
// Of(db) returns the plugin. A model that implements CacheKey (Keyer or
// MultiKeyer) invalidates the group of each of its keys whenever GORM
// writes one of its rows, whatever the write path: loaded models, slices,
// conditions without instances, soft deletes, upserts. Many-to-many
// relations invalidate the keys of both sides on every join-table write:
// a join-table model names them with M2MCacheKeys (m2m.JoinModel), a
// generated join table with RegisterM2M. ModelInvalidNode and
// M2MInvalidNode (package nodes) bind invalid nodes to models. Invalidation
// runs after the real COMMIT of the transaction the write belongs to; a
// rollback invalidates nothing.
//
// # Redis layout
//
// This is the one description of what the plugin stores; the scripts in
// scripts.go rely on it. With the default prefix "CM:":
//
//	CM:<hash>            a Redis hash holding the entries of one key: the
//	                     entry "<hash>>field" lives in its field "field",
//	                     a key without '>' in its field "base"
//	CM:<name>:invalid    a sorted set: the invalidation group <name>
//	CM:<tag>:tag         a sorted set: every entry stored under <tag>
//	CM:>stats:<minute>   a Redis hash: the counters the processes sharing
//	                     the prefix published in that minute (Unix time
//	                     / 60; see FleetStats), field
//	                     "<kind>\x00<tag>\x00<counter>" (kind and tag
//	                     empty for the total, kind "other" for the tags
//	                     past MaxFleetTags) and "@p\x00<plugin id>"
//
// An entry f of a hash is up to seven hash fields, "#s" one more per hash:
//
//	v:f  the encoded value (format byte, codec ID, payload; see codec.go)
//	x:f  when the value expires (server time, ms)
//	d:f  "1" once the value is invalidated and kept for stale serving
//	s:f  how long (ms) an invalidation keeps the value for stale serving
//	     (Settings.StaleTTL); absent when stale serving is off for it, and
//	     the invalidation deletes the value
//	g:f  the groups the value joined, NUL-separated (absent for none)
//	l:f  the token of the one computation allowed to store f (the lease)
//	t:f  when that lease runs out (server time, ms)
//	#s   the hash's size after its last sweep of expired fields
//
// Group and tag members are full entry names ("CM:book:1>base"), scored by
// when they expire (server time, µs) plus one lease TTL; the member ""
// marks the set's last invalidation, scored by that time plus one lease
// TTL. Every key the plugin writes has a TTL. Each Redis script touches
// exactly one of these keys, so every operation is safe on Redis Cluster.
// No KEYS or FLUSH is ever sent, and SCAN only by the operators' methods
// (ScanEntries, InvalidatePattern), on each master in bounded steps. The
// key of an entry's hash holds no '>' after the prefix, so the counters'
// hashes are never taken for one.
//
// # Guarantees
//
//   - A result computed before an invalidation is never stored after it:
//     each computation holds a lease that invalidations revoke, and a group
//     invalidated after the computation started refuses it.
//   - An invalidation is idempotent and retried: a group's members leave it
//     only once their entries are marked, so a retry after a lost reply
//     redoes the work, and one that cannot be delivered is reported as
//     such, never as "0 entries hit".
//   - A hit costs one Redis round trip; a miss three; an invalidation a
//     constant number, whatever the number of keys.
//   - Every key the plugin writes expires, and group and tag sets shed
//     invalidated and expired members.
//   - Concurrent misses on one key, across processes, compute once; the
//     others wait (Settings.HerdRetryCount × HerdRetryTime), then compute
//     themselves.
//   - Redis failures are reported (Settings.ErrorHook, Stats) and, unless
//     Settings.FailClosed, bypassed: the function runs without the cache.
package cacheme
