package cacheme

import "errors"

var (
	// ErrNoRedis is returned by New when Settings.Redis is nil.
	ErrNoRedis = errors.New("cacheme: no Redis client configured")

	// ErrInvalidSettings is returned (wrapped) by New for a setting that is
	// out of range.
	ErrInvalidSettings = errors.New("cacheme: invalid settings")

	// ErrInvalidSpec is returned (wrapped) by Wrap and WrapNode for a spec
	// that cannot work, such as one with no key.
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
)
