package cacheme

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// Inspecting what the cache holds, for operators' tools (the admin page,
// the command line): listing entries, reading one, and invalidating the
// entries whose keys match a pattern. This is the one file, with the
// scripts in scripts.go, that reads the entry layout the package
// documentation's "Redis layout" describes.
//
// Unlike every other operation of the plugin, these walk the keyspace:
// SCAN (MATCH within the prefix, TYPE string: entries are the only strings
// under it, a bounded COUNT) on every master of a Cluster, and ZSCAN on
// one group or tag set. Each step is bounded, so that a walk never blocks
// Redis, and none of it is on the path of a memoized call or a write.

// EntryState is what an entry's value is.
type EntryState int8

// The states of an entry.
const (
	// EntryAbsent: no value (an entry that only holds a lease, or none).
	EntryAbsent EntryState = iota
	// EntryValid: a value that a memoized call returns as a hit.
	EntryValid
	// EntryStale: an invalidated value kept for stale serving
	// (Settings.StaleTTL) until it is recomputed or runs out.
	EntryStale
	// EntryExpired: an invalidated value past the time it could be served
	// stale, which Redis still holds while a lease keeps its key.
	EntryExpired
)

// String returns "absent", "valid", "stale" or "expired".
func (s EntryState) String() string {
	switch s {
	case EntryValid:
		return "valid"
	case EntryStale:
		return "stale"
	case EntryExpired:
		return "expired"
	}
	return "absent"
}

// EntryInfo describes one cache entry.
type EntryInfo struct {
	// Key names the entry as InvalidateKeys and Inspect take it: "book:1"
	// for a key without '>', "user:1>books" for a field.
	Key string
	// RedisKey is the Redis key that holds the entry, prefix included
	// ("CM:book:1>base>"), and Field its field ("base" for a key without
	// '>').
	RedisKey, Field string
	// State is what the value is.
	State EntryState
	// Leased reports that a computation holds the entry's lease: it is
	// being computed, or recomputed while its stale value is served.
	Leased bool
	// TTL is how long the value is kept (valid, or stale), 0 if it is not.
	TTL time.Duration
	// LeaseTTL is how long the lease still runs, 0 without one.
	LeaseTTL time.Duration
	// Size is the stored value's size in bytes (format and codec bytes
	// included), 0 without a value.
	Size int
	// Groups are the invalidation groups the value joined.
	Groups []string
	// Preview is the value decoded with the plugin's codec and shown as
	// JSON, cut to PreviewBytes (Inspect only; "" if it could not be
	// decoded). PreviewErr says why it could not.
	Preview, PreviewErr string
}

// ScanOptions selects and pages the entries ScanEntries lists. At most one
// of Tag and Group may be set; Match applies with either.
type ScanOptions struct {
	// Cursor continues a listing: the Next of the previous Page. Empty
	// starts one.
	Cursor string
	// Limit is how many entries a page holds at most; it holds fewer when
	// the walk ends or runs out of steps first. If zero, defaults to 50;
	// at most MaxScanLimit.
	Limit int
	// Match is a glob (Redis's: * ? [abc] [^a] [a-z], \ escapes) over
	// entry keys, without the prefix: "book:*" matches every entry of
	// the hashes "book:…", "book:*>users" only their field "users".
	// Empty matches everything.
	Match string
	// Tag lists the entries stored under a tag (its set in Redis).
	Tag string
	// Group lists the members of an invalidation group.
	Group string
}

// Page is one page of entries, in no particular order.
type Page struct {
	Entries []EntryInfo
	// Next continues the listing (ScanOptions.Cursor); it is "" once the
	// walk is done.
	Next string
}

// Limits of the inspection walks.
const (
	// MaxScanLimit bounds ScanOptions.Limit.
	MaxScanLimit = 500
	// PreviewBytes bounds EntryInfo.Preview.
	PreviewBytes = 2048
	// PatternStep is the COUNT of each SCAN step of InvalidatePattern,
	// and the most keys it invalidates in one batch.
	PatternStep = 1000

	defaultScanLimit = 50
	maxScanSteps     = 1000                   // SCAN or ZSCAN calls one page may make
	maxScanTime      = 250 * time.Millisecond // after which a page makes no more
	scanStep         = 1000                   // the COUNT of ScanEntries' SCAN and ZSCAN steps
	maxPreviewInput  = 1 << 20                // values larger than this are not decoded
	summaryBytes     = 8192                   // what a listing reads of an entry: its header and groups
)

// statsMark starts the keys of the cross-process counters after the
// prefix (see fleetstats.go). No user key holds it: the hash of a key is
// what precedes its first '>'.
const statsMark = fieldSep + "stats:"

// ScanEntries lists the entries under the plugin's prefix, one page at a
// time: by a glob over their keys (SCAN on every master of a Cluster), or
// those of a tag or group (ZSCAN of its set). A page makes SCAN steps of
// COUNT 1000 until it is full, the walk ends, or 250ms have passed (so a
// page of a sparse glob over a large database may hold fewer entries than
// its limit, or none, and go on); an entry that is added or removed during
// a walk may be listed or not, and one listed twice is possible if a
// Cluster's slots move. Bad options are an error wrapping ErrInvalidKey
// (names) or ErrInvalidSpec (limit, cursor).
func (p *Plugin) ScanEntries(ctx context.Context, o ScanOptions) (Page, error) {
	if err := p.Err(); err != nil {
		return Page{}, err
	}
	limit := o.Limit
	switch {
	case limit < 0 || limit > MaxScanLimit:
		return Page{}, fmt.Errorf("%w: Limit %d is not within 1..%d", ErrInvalidSpec, o.Limit, MaxScanLimit)
	case o.Tag != "" && o.Group != "":
		return Page{}, fmt.Errorf("%w: set Tag or Group, not both", ErrInvalidSpec)
	case limit == 0:
		limit = defaultScanLimit
	}
	var pat pattern
	if o.Match != "" {
		var err error
		if pat, err = parsePattern(o.Match); err != nil {
			return Page{}, err
		}
	}
	cur, err := parseCursor(o.Cursor)
	if err != nil {
		return Page{}, err
	}
	if o.Tag != "" || o.Group != "" {
		key, err := p.tagKeyOrGroup(o.Tag, o.Group)
		if err != nil {
			return Page{}, err
		}
		return p.scanSet(ctx, key, pat, limit, cur)
	}
	return p.scanHashes(ctx, pat, limit, cur)
}

func (p *Plugin) tagKeyOrGroup(tag, group string) (string, error) {
	if tag != "" {
		return p.tagKey(tag)
	}
	return p.groupKey(group)
}

// Inspect describes the entry key ("hash" or "hash>field", as
// InvalidateKeys takes it), with a preview of its value. An entry that
// holds nothing is EntryAbsent, not an error.
func (p *Plugin) Inspect(ctx context.Context, key string) (EntryInfo, error) {
	if err := p.Err(); err != nil {
		return EntryInfo{}, err
	}
	e, err := p.parseEntry(key)
	if err != nil {
		if f := strings.TrimPrefix(key, key[:strings.Index(key+fieldSep, fieldSep)]); f != fieldSep+defaultField {
			return EntryInfo{}, err
		}
		// "k>base" names the entry of "k" here, as in InvalidateKeys.
		if e, err = p.parseEntry(strings.TrimSuffix(key, fieldSep+defaultField)); err != nil {
			return EntryInfo{}, err
		}
	}
	infos, values, err := p.summaries(ctx, []entry{e}, true)
	if err != nil {
		return EntryInfo{}, err
	}
	info := infos[0]
	if v := values[0]; v != "" {
		info.Preview, info.PreviewErr = p.preview([]byte(v))
	}
	return info, nil
}

// InvalidatePattern invalidates every entry whose key matches pattern (a
// glob, as ScanOptions.Match: within the prefix, which it may not name),
// through the one invalidation path InvalidateKeys takes: leases are
// revoked, stale values kept as Settings say. It walks the keyspace with
// SCAN (MATCH, TYPE string, COUNT PatternStep) on every master, and
// invalidates what each step finds before the next one. With dryRun it
// only counts. It returns how many entries held a valid value or were
// being computed (what InvalidateKeys would return for them).
//
// progress, if set, is called after each step with the keys walked so
// far and the keys to walk (the databases' sizes at the start, summed
// over the masters): done estimates the walk at PatternStep keys per
// step, and equals total once it ends. A pattern that covers the whole
// namespace (PatternCoversAll) is not refused here: tools ask for a
// confirmation first.
func (p *Plugin) InvalidatePattern(ctx context.Context, pattern string, dryRun bool, progress func(done, total int)) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	pat, err := parsePattern(pattern)
	if err != nil {
		return 0, err
	}
	nodes, err := p.masters(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, n := range nodes {
		size, err := n.DBSize(ctx).Result()
		if err != nil {
			return 0, redisErr("DBSIZE", "", err)
		}
		total += int(size)
	}
	hit, walked := 0, 0
	report := func() {
		if progress != nil {
			progress(min(walked, total), total)
		}
	}
	for _, n := range nodes {
		var cursor uint64
		for {
			keys, next, err := n.ScanType(ctx, cursor, p.match(pat), PatternStep, "string").Result()
			if err != nil {
				return hit, redisErr("SCAN", pattern, err)
			}
			// A server may return more than COUNT keys (small encodings,
			// miniredis): batches stay bounded.
			for len(keys) > 0 {
				batch := keys[:min(len(keys), PatternStep)]
				keys = keys[len(batch):]
				got, err := p.patternBatch(ctx, p.entriesOf(batch, pat), dryRun)
				hit += got
				if err != nil {
					return hit, err
				}
			}
			walked += PatternStep
			if next == 0 {
				break
			}
			report()
			cursor = next
		}
	}
	walked = total
	report()
	return hit, nil
}

// patternBatch counts or invalidates entries.
func (p *Plugin) patternBatch(ctx context.Context, entries []entry, dryRun bool) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	if !dryRun {
		return p.invalidation(nil, entries).run(ctx, p, flushRetries)
	}
	infos, _, err := p.summaries(ctx, entries, false)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, in := range infos {
		if in.State == EntryValid || in.Leased {
			n++
		}
	}
	return n, nil
}

// PatternCoversAll reports whether pattern (as InvalidatePattern takes
// it) matches every entry under the prefix: its key part is only '*', and
// so is its field part if it has one ("*", "**", "*>*"). Tools ask for an
// explicit confirmation before they invalidate such a pattern.
func PatternCoversAll(pattern string) bool {
	pat, err := parsePattern(pattern)
	if err != nil {
		return false
	}
	stars := func(s string) bool { return s != "" && strings.Trim(s, "*") == "" }
	return stars(pat.hash) && (pat.field == "" || stars(pat.field))
}

// InvalidateStoredTag is InvalidateTag for a tag this process need not
// have registered: it invalidates the tag's set as Redis holds it, for
// tools that serve many applications (the command line, an admin page
// running elsewhere). A registered tag goes through InvalidateTag (and is
// counted for it); an unregistered one whose set does not exist (nothing
// stored under it, or all of it expired) is an error wrapping
// ErrUnknownTag.
func (p *Plugin) InvalidateStoredTag(ctx context.Context, tag string) (int, error) {
	if err := p.Err(); err != nil {
		return 0, err
	}
	if p.reg.lookup(tag) != nil {
		return p.InvalidateTag(ctx, tag)
	}
	k, err := p.tagKey(tag)
	if err != nil {
		return 0, err
	}
	n, err := p.rdb.Exists(ctx, k).Result()
	if err != nil {
		return 0, redisErr("EXISTS", k, err)
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: %q (not registered here, and nothing is stored under it)", ErrUnknownTag, tag)
	}
	return p.invalidation([]string{k}, nil).run(ctx, p, 0)
}

// scanHashes is ScanEntries by glob.
func (p *Plugin) scanHashes(ctx context.Context, pat pattern, limit int, cur cursor) (Page, error) {
	nodes, err := p.masters(ctx)
	if err != nil {
		return Page{}, err
	}
	var page Page
	start := time.Now()
	for steps := 0; cur.node < len(nodes); steps++ {
		if steps == maxScanSteps || steps > 0 && time.Since(start) > maxScanTime || len(page.Entries) >= limit {
			page.Next = cur.String()
			return page, nil
		}
		keys, next, err := nodes[cur.node].ScanType(ctx, cur.pos, p.match(pat), scanStep, "string").Result()
		if err != nil {
			return Page{}, redisErr("SCAN", pat.raw, err)
		}
		if cur.skip > len(keys) {
			cur.skip = len(keys)
		}
		keys = keys[cur.skip:]
		take := keys[:min(len(keys), limit-len(page.Entries))]
		infos, _, err := p.summaries(ctx, p.entriesOf(take, pat), false)
		if err != nil {
			return Page{}, err
		}
		page.Entries = append(page.Entries, infos...)
		if len(take) < len(keys) {
			cur.skip += len(take)
			continue
		}
		cur.pos, cur.skip = next, 0
		if next == 0 {
			cur.node++
		}
	}
	return page, nil
}

// scanSet is ScanEntries of a group or tag set.
func (p *Plugin) scanSet(ctx context.Context, key string, pat pattern, limit int, cur cursor) (Page, error) {
	var page Page
	if cur.node != 0 {
		return Page{}, fmt.Errorf("%w: bad cursor for a tag or group", ErrInvalidSpec)
	}
	start := time.Now()
	for steps := 0; ; steps++ {
		if steps == maxScanSteps || steps > 0 && time.Since(start) > maxScanTime || len(page.Entries) >= limit {
			page.Next = cur.String()
			return page, nil
		}
		res, next, err := p.rdb.ZScan(ctx, key, cur.pos, "", scanStep).Result()
		if err != nil {
			return Page{}, redisErr("ZSCAN", key, err)
		}
		var members []string
		for i := 0; i+1 < len(res); i += 2 {
			members = append(members, res[i])
		}
		if cur.skip > len(members) {
			cur.skip = len(members)
		}
		members = members[cur.skip:]
		take := members[:min(len(members), limit-len(page.Entries))]
		var entries []entry
		for _, m := range take {
			// The marker "" and the version "\x01" are no entries.
			if e, ok := entryFromMember(m); ok && pat.matchEntry(p, e) {
				entries = append(entries, e)
			}
		}
		infos, _, err := p.summaries(ctx, entries, false)
		if err != nil {
			return Page{}, err
		}
		page.Entries = append(page.Entries, infos...)
		if len(take) < len(members) {
			cur.skip += len(take)
			continue
		}
		if next == 0 {
			return page, nil
		}
		cur.pos, cur.skip = next, 0
	}
}

// entriesOf returns the entries among keys that SCAN returned (the entry
// keys of the prefix, see "Redis layout") whose user key matches pat.
func (p *Plugin) entriesOf(keys []string, pat pattern) []entry {
	out := make([]entry, 0, len(keys))
	for _, k := range keys {
		rest, ok := strings.CutPrefix(k, p.set.Prefix)
		if !ok || !strings.HasSuffix(rest, fieldSep) {
			continue
		}
		h, _, ok := strings.Cut(rest, fieldSep)
		if !ok || h == "" || len(rest) <= len(h)+2 {
			continue
		}
		e := entry{key: k, hash: len(p.set.Prefix) + len(h)}
		if pat.raw == "" || pat.matchEntry(p, e) {
			out = append(out, e)
		}
	}
	return out
}

// summaries describes entries in one pipeline: with values, each value
// whole; without, its header and groups only (the first summaryBytes).
func (p *Plugin) summaries(ctx context.Context, entries []entry, values bool) ([]EntryInfo, []string, error) {
	if len(entries) == 0 {
		return nil, nil, nil
	}
	pipe := p.rdb.Pipeline()
	now := pipe.Time(ctx)
	type cmds struct {
		v    *redis.StringCmd
		size *redis.IntCmd
		ttl  *redis.DurationCmd
	}
	cs := make([]cmds, len(entries))
	for i, e := range entries {
		if values {
			cs[i].v = pipe.Get(ctx, e.key)
		} else {
			cs[i].v = pipe.GetRange(ctx, e.key, 0, summaryBytes-1)
		}
		cs[i].size = pipe.StrLen(ctx, e.key)
		cs[i].ttl = pipe.PTTL(ctx, e.key)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		// A key of another type (WRONGTYPE) holds no entry: not fatal.
		if !strings.Contains(err.Error(), "WRONGTYPE") {
			return nil, nil, redisErr("summary", entries[0].String(), err)
		}
	}
	nowMs := now.Val().UnixMilli()
	infos := make([]EntryInfo, len(entries))
	vals := make([]string, len(entries))
	for i, e := range entries {
		in := EntryInfo{Key: p.userKey(e), RedisKey: e.key, Field: e.field()}
		v := cs[i].v.Val()
		h, ok := parseHeader(v)
		if !ok && values {
			// Too short to hold its groups in the first bytes: read whole.
			h, ok = parseHeader(v)
		}
		if ok {
			ttl := cs[i].ttl.Val()
			switch h.state {
			case stateValid:
				in.State = EntryValid
			case stateStale:
				if x := headerNum(v, offExpiry, offLease); x > nowMs {
					in.State, ttl = EntryStale, time.Duration(x-nowMs)*time.Millisecond
				} else {
					in.State = EntryExpired
				}
			}
			if in.State == EntryValid || in.State == EntryStale {
				in.TTL = max(ttl, 0)
				in.Size = int(cs[i].size.Val()) - headerLen - len(h.groups)
				if h.groups != "" {
					in.Groups = strings.Split(h.groups, groupSep)
				}
				if values {
					vals[i] = h.blob
				}
			}
			if tok := v[offToken : offToken+tokenLen]; tok != noLease {
				if le := headerNum(v, offLease, offGrant); le == 0 {
					in.Leased, in.LeaseTTL = true, max(cs[i].ttl.Val(), 0)
				} else if le > nowMs {
					in.Leased, in.LeaseTTL = true, time.Duration(le-nowMs)*time.Millisecond
				}
			}
		}
		infos[i] = in
	}
	return infos, vals, nil
}

// headerNum reads the digits of a header field (v[from:to]), -1 if they
// are not digits.
func headerNum(v string, from, to int) int64 {
	n, err := strconv.ParseInt(v[from:to], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// userKey names an entry as InvalidateKeys takes it.
func (p *Plugin) userKey(e entry) string {
	k := strings.TrimPrefix(e.hashKey(), p.set.Prefix)
	if f := e.field(); f != defaultField {
		return k + fieldSep + f
	}
	return k
}

// preview decodes a stored value with the plugin's codec and shows it as
// JSON, cut to PreviewBytes.
func (p *Plugin) preview(data []byte) (string, string) {
	c := p.set.Codec
	switch {
	case len(data) > maxPreviewInput:
		return "", fmt.Sprintf("not decoded: %d bytes", len(data))
	case len(data) < 2 || data[0] != formatVersion:
		return "", "not in the plugin's format"
	case data[1] != c.ID():
		return "", fmt.Sprintf("written by codec %d; this plugin's codec is %d", data[1], c.ID())
	}
	var v any
	if err := unmarshal(c, data[2:], &v); err != nil {
		return "", err.Error()
	}
	b, err := json.Marshal(jsonable(v))
	s := string(b)
	if err != nil {
		s = fmt.Sprintf("%#v", v)
	}
	if len(s) > PreviewBytes {
		cut := PreviewBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s, ""
}

// jsonable turns maps with non-string keys (which msgpack may decode)
// into maps JSON can show.
func jsonable(v any) any {
	switch v := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case map[string]any:
		for k, e := range v {
			v[k] = jsonable(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = jsonable(e)
		}
		return v
	}
	return v
}

// masters returns a client per master (per shard of a Ring), in a stable
// order (by address), for SCAN.
func (p *Plugin) masters(ctx context.Context) ([]redis.Cmdable, error) {
	type node struct {
		addr string
		c    *redis.Client
	}
	var (
		nodes []node
		err   error
		mu    sync.Mutex
	)
	collect := func(_ context.Context, c *redis.Client) error { // called concurrently
		mu.Lock()
		defer mu.Unlock()
		nodes = append(nodes, node{c.Options().Addr, c})
		return nil
	}
	switch c := p.rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, collect)
	case *redis.Ring:
		err = c.ForEachShard(ctx, collect)
	default:
		return []redis.Cmdable{p.rdb}, nil
	}
	if err != nil {
		return nil, redisErr("masters", "", err)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].addr < nodes[j].addr })
	out := make([]redis.Cmdable, len(nodes))
	for i, n := range nodes {
		out[i] = n.c
	}
	return out, nil
}

// cursor is a position in a walk: the master (0 for a set), the SCAN or
// ZSCAN cursor on it, and how many keys or members of that step's reply
// the previous page already took.
type cursor struct {
	node int
	pos  uint64
	skip int
}

func (c cursor) String() string {
	return strconv.Itoa(c.node) + "." + strconv.FormatUint(c.pos, 10) + "." + strconv.Itoa(c.skip)
}

func parseCursor(s string) (cursor, error) {
	if s == "" {
		return cursor{}, nil
	}
	parts := strings.Split(s, ".")
	bad := fmt.Errorf("%w: bad cursor %q", ErrInvalidSpec, s)
	if len(parts) != 3 {
		return cursor{}, bad
	}
	node, err1 := strconv.Atoi(parts[0])
	pos, err2 := strconv.ParseUint(parts[1], 10, 64)
	skip, err3 := strconv.Atoi(parts[2])
	if err := errors.Join(err1, err2, err3); err != nil || node < 0 || skip < 0 {
		return cursor{}, bad
	}
	return cursor{node, pos, skip}, nil
}

// pattern is a glob over entry keys, split at its first unescaped '>'.
type pattern struct {
	raw   string
	hash  string // glob over the hash's key, without the prefix ("" matches all)
	field string // glob over the field; "" matches every field
}

// parsePattern checks and splits a glob over entry keys.
func parsePattern(s string) (pattern, error) {
	if err := checkName("pattern", s); err != nil {
		return pattern{}, err
	}
	pat := pattern{raw: s, hash: s}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '>':
			pat.hash, pat.field = s[:i], s[i+1:]
			if pat.hash == "" || pat.field == "" {
				return pattern{}, fmt.Errorf("%w: pattern %q has an empty key or field part", ErrInvalidKey, s)
			}
			return pat, nil
		}
	}
	return pat, nil
}

// match is the SCAN MATCH of pat: the prefix, escaped, pat's hash glob,
// and the separator every entry key has after its hash (the hash and field
// are checked on each key after: a hash glob's '*' may match a '>').
func (p *Plugin) match(pat pattern) string {
	h := pat.hash
	if h == "" {
		h = "*"
	}
	return globEscape(p.set.Prefix) + h + fieldSep + "*" + fieldSep
}

// matchField reports whether field matches pat's field glob. The field of
// a key without '>' is "base", which a field glob matches as such.
func (pat pattern) matchField(field string) bool {
	return pat.field == "" || globMatch(pat.field, field)
}

// matchEntry reports whether e matches pat: its hash (without the prefix)
// the hash glob, its field the field glob.
func (pat pattern) matchEntry(p *Plugin, e entry) bool {
	if pat.raw == "" {
		return true
	}
	h, ok := strings.CutPrefix(e.hashKey(), p.set.Prefix)
	return ok && (pat.hash == "" || globMatch(pat.hash, h)) && pat.matchField(e.field())
}

// globEscape escapes the glob characters of s.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// globMatch reports whether s matches the glob pat as Redis's MATCH does
// (byte-wise: * ? [set] [^set] [a-z], \ escapes).
func globMatch(pat, s string) bool {
	for len(pat) > 0 {
		switch pat[0] {
		case '*':
			for len(pat) > 1 && pat[1] == '*' {
				pat = pat[1:]
			}
			if len(pat) == 1 {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if globMatch(pat[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
			pat, s = pat[1:], s[1:]
		case '[':
			if s == "" {
				return false
			}
			rest, ok := matchClass(pat[1:], s[0])
			if !ok {
				return false
			}
			pat, s = rest, s[1:]
		default:
			c := pat[0]
			if c == '\\' && len(pat) > 1 {
				pat = pat[1:]
				c = pat[0]
			}
			if s == "" || s[0] != c {
				return false
			}
			pat, s = pat[1:], s[1:]
		}
	}
	return s == ""
}

// matchClass matches c against the class that pat starts with (after its
// '['), and returns what follows the class.
func matchClass(pat string, c byte) (string, bool) {
	not := len(pat) > 0 && pat[0] == '^'
	if not {
		pat = pat[1:]
	}
	match := false
	for len(pat) > 0 && pat[0] != ']' {
		switch {
		case pat[0] == '\\' && len(pat) > 1:
			match = match || pat[1] == c
			pat = pat[2:]
		case len(pat) > 2 && pat[1] == '-' && pat[2] != ']':
			lo, hi := pat[0], pat[2]
			if lo > hi {
				lo, hi = hi, lo
			}
			match = match || (c >= lo && c <= hi)
			pat = pat[3:]
		default:
			match = match || pat[0] == c
			pat = pat[1:]
		}
	}
	if len(pat) > 0 {
		pat = pat[1:] // the ']'
	}
	return pat, match != not
}
