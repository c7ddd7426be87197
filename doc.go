// Package cacheme memoizes function results in Redis and invalidates them
// when GORM writes rows.
//
// # Memoizing
//
// Wrap memoizes a function by key (Spec.Key or Spec.KeyTemplate); WrapNode
// memoizes it by node (package nodes). After a miss, the result joins the
// invalidation groups its spec names (Spec.Groups, Node.InvalidNodes)
// and its tag. Invalidating a group (InvalidateGroups), a tag
// (InvalidateTag), a key (InvalidateKeys) or a node invalidates the results
// in it; the next call recomputes them.
//
//	p, err := cacheme.New(cacheme.Settings{Redis: rdb})
//	booksOf, err := cacheme.Wrap(p, cacheme.Spec[uint, []Book]{
//		Key:         func(id uint) string { return fmt.Sprintf("user:%d>books", id) },
//		Groups:      func(id uint, _ []Book) []string { return []string{fmt.Sprintf("User:%d:books", id)} },
//	}, loadBooks)
//
// # With GORM
//
// db.Use(p) registers callbacks after create, update and delete. A model
// that implements CacheKey (Keyer or MultiKeyer) invalidates the group of
// each of its keys whenever GORM writes one of its rows, whatever the write
// path: loaded models, slices, conditions without instances, soft deletes,
// upserts. Many-to-many relations registered with RegisterM2M invalidate
// the keys of both sides on every join-table write, and
// ModelInvalidNode/M2MInvalidNode (package nodes) bind invalid nodes to
// models. Invalidation runs after the real COMMIT of the transaction the
// write belongs to; a rollback invalidates nothing.
//
// # Guarantees
//
//   - A result computed before an invalidation is never stored after it:
//     each computation holds a lease that invalidations revoke, and a group
//     emptied after the computation started refuses it.
//   - A hit costs one Redis round trip; a miss three; an invalidation a
//     constant number, whatever the number of keys.
//   - Every Redis script touches one key, so the plugin works on Redis
//     Cluster; no KEYS, SCAN or FLUSH is ever sent.
//   - Every key the plugin writes expires, and group and tag sets shed
//     invalidated and expired members.
//   - Concurrent misses on one key, across processes, compute once; the
//     others wait (Settings.HerdRetryCount × HerdRetryTime), then compute
//     themselves.
//   - Redis failures are reported (Settings.ErrorHook, Stats) and, unless
//     Settings.FailClosed, bypassed: the function runs without the cache.
package cacheme
