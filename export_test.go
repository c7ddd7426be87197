package cacheme

import "time"

// Test access to the Redis layout (see "Redis layout" in doc.go), for the
// tests that read or corrupt what the plugin stores.

// EntryKey returns the Redis key of the entry a memoized key names.
func EntryKey(p *Plugin, key string) string {
	e, err := p.parseEntry(key)
	if err != nil {
		panic(err)
	}
	return e.key
}

// EntryValue returns what a store writes for blob (format version, codec
// ID, payload): a valid entry, kept keep ms for stale serving after an
// invalidation, with groups.
func EntryValue(blob []byte, keep int64, groups string) []byte {
	return storedValue(keep, groups, blob)
}

// EntryBlob parses a value read from an entry's key: its state ('v', 's'
// or '-'), its groups and its encoded value.
func EntryBlob(v string) (state byte, groups, blob string, ok bool) {
	h, ok := parseHeader(v)
	return h.state, h.groups, h.blob, ok
}

// Header offsets, for tests that corrupt a field.
const (
	HeaderLen  = headerLen
	OffState   = offState
	OffExpiry  = offExpiry
	OffLease   = offLease
	OffGrant   = offGrant
	OffToken   = offToken
	OffKeep    = offKeep
	OffWaiters = offWaiters
	OffGroups  = offGroups
)

// SetFleetClock sets the clock that picks the minutes of the counters'
// hashes (fleetstats.go), for tests.
func SetFleetClock(p *Plugin, now func() time.Time) {
	p.pub.mu.Lock()
	defer p.pub.mu.Unlock()
	p.pub.now = now
}
