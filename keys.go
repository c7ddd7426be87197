package cacheme

import (
	"fmt"
	"strings"
)

// Key layout. With the default prefix "CM:":
//
//	CM:<hash>                 Redis hash holding the entries of one key; an
//	                          entry "<hash>>field" lives in field "field",
//	                          a key without '>' in field "base"
//	CM:<name>:invalid         sorted set: the invalidation group <name>
//	CM:<tag>:tag              sorted set: every entry stored under <tag>
//
// Group and tag members are full entry keys ("CM:book:1>base"), scored by
// the time they expire, so expired members are pruned as the set is used.
// Each Redis script touches exactly one of these keys, so every operation is
// safe on Redis Cluster.
const (
	defaultField  = "base"
	groupSuffix   = ":invalid"
	tagSuffix     = ":tag"
	fieldSep      = ">"
	reservedError = "ends with a reserved suffix (%q)"
)

// entry is one cache entry: a field of a Redis hash.
type entry struct {
	hash  string // full Redis key of the hash, prefix included
	field string // field inside the hash
}

// member returns the entry's name in group and tag sets.
func (e entry) member() string { return e.hash + fieldSep + e.field }

// String returns the full key, as hooks and errors show it.
func (e entry) String() string { return e.member() }

// parseEntry turns a user key ("hash" or "hash>field") into an entry. Only
// the first '>' splits: "a>b>c" is field "b>c" of hash "a".
func (p *Plugin) parseEntry(key string) (entry, error) {
	if err := checkName("key", key); err != nil {
		return entry{}, err
	}
	h, field, err := p.hashKey(key)
	if err != nil {
		return entry{}, err
	}
	if field == "" {
		field = defaultField
	}
	return entry{hash: h, field: field}, nil
}

// entryFromMember turns a group or tag member back into an entry.
func entryFromMember(m string) (entry, bool) {
	hash, field, ok := strings.Cut(m, fieldSep)
	return entry{hash: hash, field: field}, ok && hash != "" && field != ""
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
// tag set.
func (p *Plugin) hashKey(key string) (string, string, error) {
	if err := checkName("key", key); err != nil {
		return "", "", err
	}
	hash, field, ok := strings.Cut(key, fieldSep)
	if hash == "" || ok && field == "" {
		return "", "", fmt.Errorf("%w: key %q has an empty hash or field", ErrInvalidKey, key)
	}
	for _, suffix := range []string{groupSuffix, tagSuffix} {
		if strings.HasSuffix(hash, suffix) {
			return "", "", fmt.Errorf("%w: key %q "+reservedError, ErrInvalidKey, key, suffix)
		}
	}
	return p.set.Prefix + hash, field, nil
}

func checkName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidKey, kind)
	}
	return nil
}
