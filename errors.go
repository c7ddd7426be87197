package cacheme

import "errors"

var (
	// ErrNoRedis is the configuration error (Plugin.Err, db.Use, Wrap) of
	// a plugin whose Settings.Redis is nil.
	ErrNoRedis = errors.New("cacheme: no Redis client configured")

	// ErrInvalidSettings is the configuration error (wrapped; Plugin.Err,
	// db.Use, Wrap) of a plugin with a setting out of range.
	ErrInvalidSettings = errors.New("cacheme: invalid settings")

	// ErrInvalidSpec is returned (wrapped) by Wrap and WrapNode for a spec
	// that cannot work, such as one with no key, by registrations that do
	// not match the models, and by every call on a nil *Plugin.
	ErrInvalidSpec = errors.New("cacheme: invalid spec")

	// ErrInvalidKey is returned (wrapped) for a cache key, group name or tag
	// that is empty or uses a reserved form.
	ErrInvalidKey = errors.New("cacheme: invalid key")

	// ErrNotCached is returned by NodeManager.Get when the node has no
	// valid cached value (never computed, expired or invalidated).
	ErrNotCached = errors.New("cacheme: not cached")

	// ErrUnknownTag is returned by InvalidateTag for a tag that no wrapped
	// function or node type of this Plugin registered.
	ErrUnknownTag = errors.New("cacheme: unknown tag")

	// ErrRedis wraps every error that comes from Redis. With fail-open (the
	// default) such errors only reach Settings.ErrorHook; with FailClosed
	// they are also returned to the caller.
	ErrRedis = errors.New("cacheme: redis error")

	// ErrUntrackedTx is added to a GORM write made inside a transaction
	// that did not begin through the plugin's connection pool, such as one
	// begun inside db.Connection or on a *sql.Tx handed to GORM: the
	// plugin cannot see its COMMIT, so it refuses the write rather than
	// invalidate too early. Use db.Transaction or db.Begin instead.
	ErrUntrackedTx = errors.New("cacheme: write in a transaction the plugin cannot track")

	// ErrCorrupt wraps a stored value that cannot be decoded, or an entry's
	// expiry or lease time that is not a number. The value is treated as a
	// miss and overwritten; the error reaches Settings.ErrorHook.
	ErrCorrupt = errors.New("cacheme: corrupt cached value")

	// ErrClosed is returned by memoized calls, invalidations and GORM
	// writes through a plugin after its Close.
	ErrClosed = errors.New("cacheme: plugin closed")

	// ErrPanic wraps a panic of user code the plugin runs during a GORM
	// write (CacheKey, m2m key functions, node fields). It fails the
	// statement, so that GORM rolls its transaction back.
	ErrPanic = errors.New("cacheme: panic in user code")

	// ErrBroadInvalidation is reported (Settings.ErrorHook) when the plugin
	// cannot read the rows a GORM write changes and invalidates more
	// broadly instead: every row of the table, or only its TableGroup when
	// even that read fails. The write itself goes on.
	ErrBroadInvalidation = errors.New("cacheme: broad invalidation")

	// ErrConflict ends an OpStore (see Tracer) whose value was not stored
	// because an invalidation overtook its computation (counted in
	// Counters.Conflicts).
	ErrConflict = errors.New("cacheme: result overtaken by an invalidation")
)
