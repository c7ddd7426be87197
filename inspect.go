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
// SCAN (MATCH within the prefix, TYPE hash, a bounded COUNT) on every
// master of a Cluster, and ZSCAN on one group or tag set. Each step is
// bounded, so that a walk never blocks Redis, and none of it is on the
// path of a memoized call or a write.

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
	// EntryExpired: a value past its TTL that Redis still holds until the
	// next sweep of its hash.
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
	// RedisKey is the Redis hash that holds the entry (prefix included),
	// and Field its field in that hash ("base" for a key without '>').
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
	// Limit is how many entries a page holds at least, unless the walk
	// ends or runs out of steps first; a page ends on a whole hash, so it
	// may hold more. If zero, defaults to 50; at most MaxScanLimit.
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
	h, f, err := p.hashKey(key)
	if err != nil {
		return EntryInfo{}, err
	}
	if f == "" {
		f = defaultField
	}
	res, err := summaryScript.Run(ctx, p.rdb, []string{h}, "1", f).StringSlice()
	if err != nil {
		return EntryInfo{}, redisErr("inspect", key, err)
	}
	infos, values := p.parseSummary(h, res, true)
	if len(infos) == 0 {
		return EntryInfo{Key: p.userKey(h, f), RedisKey: h, Field: f}, nil
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
// SCAN (MATCH, TYPE hash, COUNT PatternStep) on every master, and
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
			keys, next, err := n.ScanType(ctx, cursor, p.match(pat), PatternStep, "hash").Result()
			if err != nil {
				return hit, redisErr("SCAN", pattern, err)
			}
			// A server may return more than COUNT keys (small encodings,
			// miniredis): batches stay bounded.
			for len(keys) > 0 {
				batch := keys[:min(len(keys), PatternStep)]
				keys = keys[len(batch):]
				got, err := p.patternBatch(ctx, pat, p.ownHashes(batch), dryRun)
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

// patternBatch counts or invalidates the entries of hashes that pat
// matches.
func (p *Plugin) patternBatch(ctx context.Context, pat pattern, hashes []string, dryRun bool) (int, error) {
	if len(hashes) == 0 {
		return 0, nil
	}
	if !dryRun && pat.field == "" {
		// Every entry of each hash: the script finds them itself.
		entries := make([]entry, len(hashes))
		for i, h := range hashes {
			entries[i] = entry{hash: h}
		}
		return p.invalidation(nil, entries).run(ctx, p, flushRetries)
	}
	infos, err := p.summaries(ctx, hashes, nil)
	if err != nil {
		return 0, err
	}
	n := 0
	var entries []entry
	for _, in := range infos {
		if !pat.matchField(in.Field) {
			continue
		}
		if dryRun {
			if in.State == EntryValid || in.Leased {
				n++
			}
			continue
		}
		entries = append(entries, entry{hash: in.RedisKey, field: in.Field})
	}
	if dryRun || len(entries) == 0 {
		return n, nil
	}
	return p.invalidation(nil, entries).run(ctx, p, flushRetries)
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
		keys, next, err := nodes[cur.node].ScanType(ctx, cur.pos, p.match(pat), scanStep, "hash").Result()
		if err != nil {
			return Page{}, redisErr("SCAN", pat.raw, err)
		}
		if cur.skip > len(keys) {
			cur.skip = len(keys)
		}
		keys = keys[cur.skip:]
		// Take whole hashes until the page is full.
		take := keys
		for i := range keys {
			if i >= limit-len(page.Entries) {
				take = keys[:i]
				break
			}
		}
		infos, err := p.summaries(ctx, p.ownHashes(take), nil)
		if err != nil {
			return Page{}, err
		}
		for _, in := range infos {
			if pat.matchField(in.Field) {
				page.Entries = append(page.Entries, in)
			}
		}
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
		byHash := map[string][]string{}
		var hashes []string
		for _, m := range take {
			e, ok := entryFromMember(m)
			if !ok || !pat.matchEntry(p, e) {
				continue
			}
			if _, seen := byHash[e.hash]; !seen {
				hashes = append(hashes, e.hash)
			}
			byHash[e.hash] = append(byHash[e.hash], e.field)
		}
		infos, err := p.summaries(ctx, hashes, byHash)
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

// summaries describes the entries of hashes (all of them, or the fields
// fields[hash] names) in one pipeline, without their values.
func (p *Plugin) summaries(ctx context.Context, hashes []string, fields map[string][]string) ([]EntryInfo, error) {
	calls := make([]scriptCall, len(hashes))
	for i, h := range hashes {
		args := []any{"0"}
		for _, f := range fields[h] {
			args = append(args, f)
		}
		calls[i] = scriptCall{summaryScript, h, args}
	}
	cmds, err := p.runPipeline(ctx, calls)
	if err != nil {
		return nil, err
	}
	var out []EntryInfo
	for i, cmd := range cmds {
		res, err := cmd.StringSlice()
		if err != nil {
			return nil, redisErr("summary", hashes[i], err)
		}
		infos, _ := p.parseSummary(hashes[i], res, false)
		out = append(out, infos...)
	}
	return out, nil
}

// parseSummary reads summaryScript's reply: the server time (ms), then
// per entry its field, value size, x:f, d:f, t:f and g:f (and, with
// values, v:f).
func (p *Plugin) parseSummary(hash string, res []string, values bool) ([]EntryInfo, []string) {
	if len(res) < 1 {
		return nil, nil
	}
	now, _ := strconv.ParseFloat(res[0], 64)
	width := 6
	if values {
		width = 7
	}
	var infos []EntryInfo
	var vals []string
	for i := 1; i+width <= len(res); i += width {
		r := res[i : i+width]
		in := EntryInfo{Key: p.userKey(hash, r[0]), RedisKey: hash, Field: r[0]}
		in.Size, _ = strconv.Atoi(r[1])
		x, xerr := strconv.ParseFloat(r[2], 64)
		if in.Size > 0 {
			switch {
			case xerr != nil || x <= now:
				in.State = EntryExpired
			case r[3] != "":
				in.State = EntryStale
			default:
				in.State = EntryValid
			}
			if in.State != EntryExpired {
				in.TTL = time.Duration(x-now) * time.Millisecond
			}
		}
		if t, err := strconv.ParseFloat(r[4], 64); err == nil && t > now {
			in.Leased, in.LeaseTTL = true, time.Duration(t-now)*time.Millisecond
		}
		if r[5] != "" {
			in.Groups = strings.Split(r[5], groupSep)
		}
		infos = append(infos, in)
		if values {
			vals = append(vals, r[6])
		}
	}
	return infos, vals
}

// userKey names an entry as InvalidateKeys takes it.
func (p *Plugin) userKey(hash, field string) string {
	k := strings.TrimPrefix(hash, p.set.Prefix)
	if field == defaultField {
		return k
	}
	return k + fieldSep + field
}

// ownHashes drops the keys SCAN returned that are not entry hashes: the
// cross-process counters.
func (p *Plugin) ownHashes(keys []string) []string {
	out := keys[:0:0]
	for _, k := range keys {
		if rest, ok := strings.CutPrefix(k, p.set.Prefix); ok && !strings.Contains(rest, fieldSep) {
			out = append(out, k)
		}
	}
	return out
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

// match is the SCAN MATCH of pat: the prefix, escaped, and pat's hash glob.
func (p *Plugin) match(pat pattern) string {
	h := pat.hash
	if h == "" {
		h = "*"
	}
	return globEscape(p.set.Prefix) + h
}

// matchField reports whether field matches pat's field glob. The field of
// a key without '>' is "base", which a field glob matches as such.
func (pat pattern) matchField(field string) bool {
	return pat.field == "" || globMatch(pat.field, field)
}

// matchEntry reports whether e (from a set) matches pat.
func (pat pattern) matchEntry(p *Plugin, e entry) bool {
	if pat.raw == "" {
		return true
	}
	h, ok := strings.CutPrefix(e.hash, p.set.Prefix)
	return ok && globMatch(pat.hash, h) && pat.matchField(e.field)
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

// summaryScript describes entries of one hash without changing anything:
// the server time (ms), then per entry that holds a value or a lease its
// field, the value's size, x:f, d:f, t:f and g:f ("" for an absent
// field), and with ARGV[1] "1" its value v:f too. ARGV: "1" or "0", then
// the fields to describe; none: every entry of the hash.
var summaryScript = redis.NewScript(luaNow + `
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
if #fields == 0 then
  local seen = {}
  for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
    local kind, f = string.sub(k, 1, 2), string.sub(k, 3)
    if (kind == 'v:' or kind == 'l:') and not seen[f] then
      seen[f] = true
      fields[#fields + 1] = f
    end
  end
  table.sort(fields)
end
local out = {string.format('%.0f', now())}
for _, f in ipairs(fields) do
  local r = redis.call('HMGET', KEYS[1], 'x:'..f, 'd:'..f, 't:'..f, 'g:'..f, 'l:'..f)
  local size = redis.call('HSTRLEN', KEYS[1], 'v:'..f)
  if size > 0 or r[5] then
    out[#out + 1] = f
    out[#out + 1] = tostring(size)
    for j = 1, 4 do out[#out + 1] = r[j] or '' end
    if ARGV[1] == '1' then out[#out + 1] = redis.call('HGET', KEYS[1], 'v:'..f) or '' end
  end
end
return out
`)
