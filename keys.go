package cacheme

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// User keys, group names and tags to Redis keys, as the package
// documentation's "Redis layout" describes them (the one description of
// what the plugin stores).
//
// The field "base" is reserved for keys without '>': a memoized key
// "book:1>base" (Wrap, WrapNode, NodeManager.Get) is rejected with
// ErrInvalidKey, since it would be the same entry as "book:1". In
// InvalidateKeys, "book:1>base" names that entry alone, while "book:1"
// invalidates every field of the hash; hooks and errors show entries in
// that form too. Keys, group names and tags must be valid UTF-8 without NUL
// bytes.
const (
	defaultField  = "base"
	groupSuffix   = ":invalid"
	tagSuffix     = ":tag"
	fieldSep      = ">"
	wakeSuffix    = "wake" // after an entry's key: its wake-up list
	groupSep      = "\x00" // between the group names of an entry (g:f); no name holds NUL
	reservedError = "ends with a reserved suffix (%q)"
)

// entry is one cache entry: its own Redis key, the prefix, the user key's
// hash part, '>', its field and a closing '>' ("CM:book:1>base>"). The
// closing '>' keeps entry keys apart from group and tag keys (which end
// with a reserved suffix) and from the hash indexes ("CM:book:1>", one '>').
type entry struct {
	key  string // the Redis key
	hash int    // length of the hash part of key, prefix included
}

// member returns the entry's name in group and tag sets, hooks and errors:
// its key without the closing '>' ("CM:book:1>base").
func (e entry) member() string { return e.key[:len(e.key)-1] }

// String returns the full key, as hooks and errors show it.
func (e entry) String() string { return e.member() }

// hashKey returns the hash part of the entry, prefix included ("CM:book:1").
func (e entry) hashKey() string { return e.key[:e.hash] }

// field returns the entry's field ("base" for a key without '>').
func (e entry) field() string { return e.key[e.hash+1 : len(e.key)-1] }

// index returns the Redis key of the hash index the entry joins ("" for
// the field "base"): InvalidateKeys("hash") invalidates its members.
func (e entry) index() string {
	if e.field() == defaultField {
		return ""
	}
	return hashIndex(e.hashKey())
}

// wakeKey returns the Redis key of the list that wakes the callers of
// other processes waiting for the entry's computation ("CM:book:1>base>wake").
func (e entry) wakeKey() string { return e.key + wakeSuffix }

// hashIndex returns the Redis key of the index of a hash's fields: a sorted
// set like a group, which every entry of the hash but "base" joins.
func hashIndex(hash string) string { return hash + fieldSep }

// newEntry returns the entry of field in hash (prefix included).
func newEntry(hash, field string) entry {
	return entry{key: hash + fieldSep + field + fieldSep, hash: len(hash)}
}

// parseEntry turns a memoized key ("hash" or "hash>field") into an entry.
// Only the first '>' splits: "a>b>c" is field "b>c" of hash "a". The field
// "base" is reserved: "a" is stored there, and "a>base" is an error wrapping
// ErrInvalidKey rather than a second name for the same entry.
func (p *Plugin) parseEntry(key string) (entry, error) {
	h, field, err := splitKey(key)
	if err != nil {
		return entry{}, err
	}
	n := len(p.set.Prefix) + len(h)
	switch field {
	case "":
		// One allocation: prefix, key, ">base>".
		return entry{key: p.set.Prefix + key + fieldSep + defaultField + fieldSep, hash: n}, nil
	case defaultField:
		return entry{}, fmt.Errorf("%w: key %q uses the field %q reserved for keys without %q",
			ErrInvalidKey, key, defaultField, fieldSep)
	}
	return entry{key: p.set.Prefix + key + fieldSep, hash: n}, nil
}

// entryFromMember turns a group or tag member back into an entry.
func entryFromMember(m string) (entry, bool) {
	hash, field, ok := strings.Cut(m, fieldSep)
	if !ok || hash == "" || field == "" {
		return entry{}, false
	}
	return entry{key: m + fieldSep, hash: len(hash)}, true
}

// groupKey returns the Redis key of the invalidation group name.
func (p *Plugin) groupKey(name string) (string, error) {
	if err := checkName("group", name); err != nil {
		return "", err
	}
	return p.set.Prefix + name + groupSuffix, nil
}

// tagKey returns the Redis key of the tag set.
func (p *Plugin) tagKey(tag string) (string, error) {
	if err := checkName("tag", tag); err != nil {
		return "", err
	}
	return p.set.Prefix + tag + tagSuffix, nil
}

// hashKey splits a user key into the Redis key of its hash ("book:1" in
// "book:1>x") and its field, "" when the key has no '>' (the whole hash).
// A hash may not end with a reserved suffix: its key would be a group or
// tag set. The field "base" is allowed: to InvalidateKeys it names the
// entry of the key without '>'.
func (p *Plugin) hashKey(key string) (string, string, error) {
	hash, field, err := splitKey(key)
	if err != nil {
		return "", "", err
	}
	return p.set.Prefix + hash, field, nil
}

// splitKey checks a user key and splits it at its first '>', without
// allocating: the hash (without the prefix) and the field ("" for none).
func splitKey(key string) (string, string, error) {
	if err := checkName("key", key); err != nil {
		return "", "", err
	}
	hash, field, ok := strings.Cut(key, fieldSep)
	if hash == "" || ok && field == "" {
		return "", "", fmt.Errorf("%w: key %q has an empty hash or field", ErrInvalidKey, key)
	}
	for _, suffix := range [...]string{groupSuffix, tagSuffix} {
		if strings.HasSuffix(hash, suffix) {
			return "", "", fmt.Errorf("%w: key %q "+reservedError, ErrInvalidKey, key, suffix)
		}
	}
	return hash, field, nil
}

// checkName rejects an empty key, group name or tag, and one that holds a
// NUL byte or is not valid UTF-8: such bytes come from hostile or broken
// input, and would reach Redis keys, hook messages and logs.
func checkName(kind, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty %s", ErrInvalidKey, kind)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("%w: %s %q holds a NUL byte", ErrInvalidKey, kind, s)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidKey, kind, s)
	}
	return nil
}
