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
// # Caching GORM reads
//
// The Cached clause (db.Clauses(cacheme.Cached{TTL: time.Minute})) and
// CacheQueries cache GORM reads with no function to write: a hit hands the
// rows the database returned back to GORM and runs no SQL. A read is filed
// under the conjunctions of its equality conditions (conj.go), and a write
// invalidates exactly the cached reads whose conjunctions its rows satisfy
// before or after it. While a memoized function computes, the GORM reads
// it makes with the call's context add what they depend on to its groups
// (capture.go). Nothing read inside a transaction is stored.
//
// # The local layer
//
// Settings.Local keeps valid values read from Redis in the process, bounded
// by bytes and entries (local.go): a local hit makes no round trip. Every
// invalidation script publishes the keys it invalidated on the Prefix's
// channel, and each plugin with the layer on evicts them; a lost
// subscription empties the layer before it serves again. A reader in
// another process may get a value for up to the delivery delay after its
// invalidation returned.
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
// scripts.go and the header code in header.go rely on it. With the default
// prefix "CM:":
//
//	CM:<hash>><field>>   an entry: a Redis string; "book:1>x" is field "x"
//	                     of hash "book:1", a key without '>' is field
//	                     "base" ("CM:book:1>base>")
//	CM:<hash>>           a sorted set: the index of a hash's fields, which
//	                     every entry of the hash but "base" joins
//	CM:<entry key>wake   a list: wake-up tokens for callers of other
//	                     processes waiting for the entry's computation
//	CM:<name>:invalid    a sorted set: the invalidation group <name>
//	CM:<tag>:tag         a sorted set: every entry stored under <tag>
//	CM:<table>:schemes   a sorted set: the schemes of the table (the
//	                     sorted, comma-separated column lists of the
//	                     conjunctions cached reads are filed under),
//	                     scored by when they may be forgotten (server
//	                     time, ms)
//	CM:>stats:<minute>   a Redis hash: the counters the processes sharing
//	                     the prefix published in that minute (Unix time
//	                     / 60; see FleetStats), field
//	                     "<kind>\x00<tag>\x00<counter>" (kind and tag
//	                     empty for the total, kind "other" for the tags
//	                     past MaxFleetTags) and "@p\x00<plugin id>"
//	CM:invalidations     a pub/sub channel, not a key: every invalidation
//	                     of entries publishes their keys there,
//	                     NUL-separated, from the script that invalidates
//	                     them, for the local layers (Settings.Local)
//
// A cached GORM read is the entry "q:<table>:<hash>"; its value is the
// rows the database returned (rowset.go). Its groups are the conjunctions
// it is filed under, "conj:<table>:<col>=<value>&..." (see conj.go), and
// "conj:<table>:*", or "table:<table>" (TableGroup) for a table it
// depends on whole.
//
// An entry's value is a 102-byte header of fixed-width ASCII fields, then
// the groups the value joined (NUL-separated, so that an admin page can
// show them), then the encoded value (format byte, codec ID, payload; see
// codec.go):
//
//	C2              magic and layout version
//	state           'v' valid, 's' invalidated and kept for stale
//	                serving, '-' no value (a lease, or a tombstone that
//	                keeps the waiter count of a revoked lease)
//	x (13 digits)   a kept value's expiry (server ms)
//	le (13)         the lease's expiry (server ms); 0: the lease lives as
//	                long as its key (taken by SET NX, whose PX is LeaseTTL)
//	lg (16)         when the lease was granted (server µs); 0 for SET NX
//	token (32)      the token of the one computation allowed to store
//	                the entry (the lease); '-' × 32 for none
//	keep (13)       how long (ms) an invalidation keeps the value for
//	                stale serving (Settings.StaleTTL); 0: it deletes it
//	waiters (4)     callers of other processes waiting to be woken
//	groups (8)      the length of the groups that follow
//
// A valid value's expiry is its key's (PEXPIRE is the value's TTL): a hit
// is one SET key <lease header> NX GET PX <LeaseTTL> whose reply has state
// 'v', judged without any clock and decoded straight from the reply; the
// same command on an absent key takes the lease (a common miss then costs
// one more round trip, the store). A key's TTL outlives its value only
// while a lease is held on an invalidated value, and then the scripts
// judge the header by the server's clock (TIME). This needs Redis 7.0 or
// later (SET with both NX and GET), and, since the hit is a write command,
// a maxmemory policy that evicts rather than refuses writes.
//
// Group, tag and hash-index members are entry names ("CM:book:1>base"),
// scored by when they expire (server time, µs) plus one lease TTL; the
// member "" marks the set's last invalidation, scored by that time plus one
// lease TTL; the member "\x01" is the set's version, scored 4e15 plus the
// joins so far (an invalidation drops the members it read in one range
// when no join came in between). Every key the plugin writes has a TTL. On a single server (a
// client or failover client) the store is one script over the entry and
// its sets; on several servers (Cluster, Ring) the sets are joined first,
// one script each, then the entry stored. Invalidations run one script per
// batch of at most 1000 keys on one server, or of one slot on Cluster (a
// Ring: one key per script). Every script's keys are in one Cluster slot
// except the single-server store, so every operation is safe on Redis
// Cluster. No KEYS or FLUSH is ever sent, and SCAN only by the operators'
// methods (ScanEntries, InvalidatePattern), on each master in bounded
// steps.
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
//   - A hit costs one Redis round trip; a miss two on a single server
//     (three on Cluster or a Ring); an invalidation a constant number,
//     whatever the number of keys.
//   - Every key the plugin writes expires, and group and tag sets shed
//     invalidated and expired members.
//   - Concurrent misses on one key, across processes, compute once: in a
//     process, concurrent calls of one entry share one read (and one
//     computation); across processes, callers wait for the lease holder,
//     which wakes them (BLPOP on the entry's wake list) when its value
//     lands or it gives up, and take over when its lease runs out. Only
//     Settings.HerdRetryCount, if set, bounds the wait.
//   - Redis failures are reported (Settings.ErrorHook, Stats) and, unless
//     Settings.FailClosed, bypassed: the function runs without the cache.
package cacheme
