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

// LocalLive reports whether p's local layer serves (its subscription is
// confirmed), and how many times it was emptied so far.
func LocalLive(p *Plugin) (live bool, purges int64) {
	if p.local == nil {
		return false, 0
	}
	return p.local.live.Load(), p.local.purges.Load()
}

// LocalMessages returns how many invalidation messages p's local layer
// received.
func LocalMessages(p *Plugin) int64 { return p.local.messages.Load() }

// LocalFill puts a valid entry of valueLen bytes under key into p's local
// layer, as a read that found it in Redis would, and reports whether it
// was kept.
func LocalFill(p *Plugin, key string, valueLen int) bool {
	snap := p.local.snapshot(key)
	v := string(storedValue(0, "", make([]byte, valueLen)))
	return p.local.insert(snap, key, v, time.Minute)
}

// LocalSize returns the weighted size and the entry count of p's local
// layer, once its pending maintenance has run.
func LocalSize(p *Plugin) (weight uint64, entries int) {
	p.local.cache.CleanUp()
	return p.local.cache.WeightedSize(), p.local.cache.EstimatedSize()
}

// LocalHas reports whether p's local layer holds the entry of key.
func LocalHas(p *Plugin, key string) bool {
	_, ok := p.local.cache.GetIfPresent(EntryKey(p, key))
	return ok
}
