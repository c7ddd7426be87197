package cacheme

import (
	"strconv"
	"sync"
	"unsafe"
)

// The header at the start of every entry's value (see "Redis layout" in
// the package documentation): fixed-width ASCII, so that the scripts read
// and patch it with GETRANGE and SETRANGE without touching the value, and
// a hit is judged from its first bytes. Offsets are zero-based; luaHeader
// in scripts.go reads the same.
const (
	headerLen   = 102
	hdrMagic    = "C2" // layout version 2
	offState    = 2    // 'v' valid, 's' invalidated and kept for stale serving, '-' no value
	offExpiry   = 3    // 13 digits: a kept value's expiry (server ms)
	offLease    = 16   // 13 digits: the lease's expiry (server ms); 0: as long as the key lives
	offGrant    = 29   // 16 digits: when the lease was granted (server µs); 0: see storeScript
	offToken    = 45   // 32 bytes: the lease's token, or '-' × 32 for none
	offKeep     = 77   // 13 digits: how long an invalidation keeps the value (ms); 0: deleted
	offWaiters  = 90   // 4 digits: callers of other processes waiting to be woken
	offGroups   = 94   // 8 digits: the length of the groups that follow the header
	tokenLen    = 32
	stateValid  = 'v'
	stateStale  = 's'
	stateNone   = '-'
	maxGroupLen = 99999999
)

// noLease is the token field of an entry without a lease.
const noLease = "--------------------------------"

// leaseHeader is the value the fast path writes with SET NX: a header with
// no value and this caller's lease, which lives as long as the key (its
// PX is the lease TTL). It is pooled: the fast path sends one per call.
type leaseHeader struct {
	b [headerLen]byte
	// lost is set when a command that sends b was abandoned (see
	// abandonable): it may still be writing b to its connection, so the
	// header never returns to the pool.
	lost bool
}

var leaseTemplate = func() (h leaseHeader) {
	s := hdrMagic + string(stateNone) + zeros(13) + zeros(13) + zeros(16) + noLease + zeros(13) + zeros(4) + zeros(8)
	copy(h.b[:], s)
	return h
}()

var leasePool = sync.Pool{New: func() any { h := leaseTemplate; return &h }}

// MarshalBinary lets go-redis write the header without boxing a copy.
func (h *leaseHeader) MarshalBinary() ([]byte, error) { return h.b[:], nil }

// token returns the header's token.
func (h *leaseHeader) token() string { return string(h.b[offToken : offToken+tokenLen]) }

func zeros(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = '0'
	}
	return string(b)
}

// newLeaseHeader returns a pooled lease header holding a fresh token
// (p.tokenID and a counter: unique across processes and computations).
func (p *Plugin) newLeaseHeader() *leaseHeader {
	h := leasePool.Get().(*leaseHeader)
	t := h.b[offToken : offToken+tokenLen]
	n := copy(t, p.tokenID)
	var buf [20]byte
	c := strconv.AppendUint(buf[:0], p.tokenN.Add(1), 36)
	for i := n; i < tokenLen; i++ {
		t[i] = '0'
	}
	copy(t[tokenLen-len(c):], c)
	return h
}

// putLeaseHeader returns h to the pool once the commands that sent it are
// done, unless one was abandoned and may still read it.
func putLeaseHeader(h *leaseHeader) {
	if !h.lost {
		leasePool.Put(h)
	}
}

// storedValue returns the value a store writes: a header (valid, no lease,
// the stale keep time), the groups, and the encoded value blob.
func storedValue(keep int64, groups string, blob []byte) []byte {
	out := make([]byte, 0, headerLen+len(groups)+len(blob))
	out = append(out, hdrMagic...)
	out = append(out, stateValid)
	out = appendPadded(out, 0, 13)
	out = appendPadded(out, 0, 13)
	out = appendPadded(out, 0, 16)
	out = append(out, noLease...)
	out = appendPadded(out, keep, 13)
	out = appendPadded(out, 0, 4)
	out = appendPadded(out, int64(len(groups)), 8)
	out = append(out, groups...)
	return append(out, blob...)
}

// appendPadded appends n (0 <= n < 10^w) as w digits.
func appendPadded(b []byte, n int64, w int) []byte {
	var buf [20]byte
	s := strconv.AppendInt(buf[:0], n, 10)
	for i := len(s); i < w; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// parsedHeader is what the client needs of a header.
type parsedHeader struct {
	state  byte
	groups string // the groups, NUL-separated
	blob   string // the encoded value (format version, codec ID, payload)
}

// parseHeader parses a value read from an entry's key; ok is false for
// anything that is not a well-formed header (corrupt: the scripts drop
// it). It does not copy: groups and blob share v's bytes.
func parseHeader(v string) (h parsedHeader, ok bool) {
	if len(v) < headerLen || v[0] != hdrMagic[0] || v[1] != hdrMagic[1] {
		return h, false
	}
	switch v[offState] {
	case stateValid, stateStale, stateNone:
	default:
		return h, false
	}
	// Every number must be digits, as luaHeader's parse requires: the
	// client and the scripts agree on what is corrupt.
	for _, r := range [...][2]int{{offExpiry, offToken}, {offKeep, headerLen}} {
		for _, c := range []byte(v[r[0]:r[1]]) {
			if c < '0' || c > '9' {
				return h, false
			}
		}
	}
	n := 0
	for _, c := range []byte(v[offGroups:headerLen]) {
		n = n*10 + int(c-'0')
	}
	if headerLen+n > len(v) {
		return h, false
	}
	h.state = v[offState]
	h.groups = v[headerLen : headerLen+n]
	h.blob = v[headerLen+n:]
	return h, true
}

// bytesOf returns the bytes of s without copying them. The result must not
// be modified: codecs only read what they decode (see Codec).
func bytesOf(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// stringOf returns b as a string without copying it. b must not be
// modified afterwards.
func stringOf(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
