package cacheme

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Counters across processes. Stats are one process's; every process that
// shares a Prefix also adds its counters to Redis, one hash per minute
// (see "Redis layout"), so that FleetStats returns the sum over all of
// them for the last FleetWindow, overall, per tag, and per minute.
//
// The publisher sends only what changed since its last publication, at
// most every Settings.StatsInterval: the first counter that changes after
// a publication arms a timer, so an idle plugin sends nothing and runs no
// goroutine. Close publishes what is left. A publication that fails is
// reported and its counts are sent with the next one: they are lost only
// if the last one, at Close, fails too.
//
// Invariant: published holds, per tag, what Redis has been sent; it only
// moves forward after a publication succeeded, so every count is sent
// once.

// Limits of the cross-process counters.
const (
	// FleetWindow is how far back FleetStats reaches; each minute's hash
	// expires ten minutes after it leaves the window.
	FleetWindow = time.Hour
	// MaxFleetTags bounds the tags one publication names: the most active
	// ones; the others are added up as FleetOther.
	MaxFleetTags = 50
	// FleetOther is the tag under which Fleet.Tags adds up the tags a
	// publication did not name.
	FleetOther = "(other)"

	fleetKeyTTL = FleetWindow + 10*time.Minute
	procField   = "@p" // "@p\x00<plugin id>": a plugin published in this minute
)

// Fleet is the sum of the counters every plugin sharing a Prefix published
// in the last FleetWindow.
type Fleet struct {
	// Total is every operation's.
	Total Counters
	// Tags are per tag, FleetOther included when some were not named.
	Tags map[string]Counters
	// Kinds says what each tag of Tags names (FleetOther is KindFunction).
	Kinds map[string]TagKind
	// Processes is how many plugins (processes, or several plugins in
	// one) published in the window.
	Processes int
	// Minutes holds the totals per minute, oldest first, one for each
	// minute of the window and the current one.
	Minutes []FleetMinute
}

// FleetMinute is the total of one minute.
type FleetMinute struct {
	Start time.Time
	Counters
}

// counterFields names the fields of Counters in Redis and in tools (the
// command line's JSON). Every field of Counters is here (a test checks).
var counterFields = []struct {
	Name string
	get  func(*Counters) *int64
}{
	{"hits", func(c *Counters) *int64 { return &c.Hits }},
	{"misses", func(c *Counters) *int64 { return &c.Misses }},
	{"stale", func(c *Counters) *int64 { return &c.Stale }},
	{"herd_waits", func(c *Counters) *int64 { return &c.HerdWaits }},
	{"herd_timeouts", func(c *Counters) *int64 { return &c.HerdTimeouts }},
	{"loader_errors", func(c *Counters) *int64 { return &c.LoaderErrors }},
	{"redis_errors", func(c *Counters) *int64 { return &c.RedisErrors }},
	{"corrupt", func(c *Counters) *int64 { return &c.Corrupt }},
	{"conflicts", func(c *Counters) *int64 { return &c.Conflicts }},
	{"invalidations", func(c *Counters) *int64 { return &c.Invalidations }},
	{"replayed", func(c *Counters) *int64 { return &c.Replayed }},
	{"fallbacks", func(c *Counters) *int64 { return &c.Fallbacks }},
	{"breaker_skips", func(c *Counters) *int64 { return &c.BreakerSkips }},
	{"uncached", func(c *Counters) *int64 { return &c.Uncached }},
	{"local_hits", func(c *Counters) *int64 { return &c.LocalHits }},
}

// CounterNames returns the names of the counters, in the order of the
// fields of Counters ("hits", "misses", "stale", "herd_waits", ...).
func CounterNames() []string {
	out := make([]string, len(counterFields))
	for i, f := range counterFields {
		out[i] = f.Name
	}
	return out
}

// Values returns c's counters in the order of CounterNames.
func (c Counters) Values() []int64 {
	out := make([]int64, len(counterFields))
	for i, f := range counterFields {
		out[i] = *f.get(&c)
	}
	return out
}

// add adds d to c.
func (c *Counters) add(d Counters) {
	for _, f := range counterFields {
		*f.get(c) += *f.get(&d)
	}
}

// sub returns c - d.
func (c Counters) sub(d Counters) Counters {
	for _, f := range counterFields {
		*f.get(&c) -= *f.get(&d)
	}
	return c
}

// sum returns the sum of c's counters.
func (c Counters) sum() int64 {
	var n int64
	for _, f := range counterFields {
		n += *f.get(&c)
	}
	return n
}

// publisher adds a plugin's counters to Redis (see the top of this file).
type publisher struct {
	mu        sync.Mutex // one publication at a time; protects published and now
	published Stats      // what Redis has been sent
	now       func() time.Time

	timerMu sync.Mutex // protects timer and stopped (never held while publishing)
	timer   *time.Timer
	stopped bool
	running sync.WaitGroup // timer publications; Add under timerMu while not stopped
}

// clock returns the clock of the buckets. The caller holds mu.
func (pub *publisher) clock() func() time.Time {
	if pub.now != nil {
		return pub.now
	}
	return time.Now
}

// startPublisher makes the registry arm the publication timer on activity.
func (p *Plugin) startPublisher() {
	p.reg.active = p.armPublisher
}

// armPublisher schedules a publication in Settings.StatsInterval. It is
// called on a memoized call's path, so it never waits for a publication.
func (p *Plugin) armPublisher() {
	p.pub.timerMu.Lock()
	defer p.pub.timerMu.Unlock()
	if p.pub.stopped {
		return
	}
	p.pub.timer = time.AfterFunc(p.set.StatsInterval, func() {
		p.pub.timerMu.Lock()
		if p.pub.stopped {
			p.pub.timerMu.Unlock()
			return
		}
		p.pub.running.Add(1)
		p.pub.timerMu.Unlock()
		defer p.pub.running.Done()
		ctx, cancel := context.WithTimeout(context.Background(), max(p.set.StatsInterval, publishTimeout))
		defer cancel()
		if err := p.PublishStats(ctx); err != nil {
			p.report(ctx, err)
			p.armPublisher() // try again with the next interval
		}
	})
}

// publishTimeout bounds a publication, at least.
const publishTimeout = time.Second

// stopPublisher stops the timer and publishes what is left (Close).
func (p *Plugin) stopPublisher(ctx context.Context) {
	if p.reg.active == nil {
		return
	}
	p.pub.timerMu.Lock()
	p.pub.stopped = true
	if p.pub.timer != nil {
		p.pub.timer.Stop()
	}
	p.pub.timerMu.Unlock()
	p.pub.running.Wait()
	ctx, cancel := context.WithTimeout(ctx, max(p.set.FlushTimeout, publishTimeout))
	defer cancel()
	if err := p.PublishStats(ctx); err != nil {
		p.report(ctx, err)
	}
}

// PublishStats adds to Redis now what the plugin counted since its last
// publication (see FleetStats); the plugin does it by itself every
// Settings.StatsInterval while it is active, and at Close. It publishes
// even with the interval negative (automatic publication off), and after
// Close.
func (p *Plugin) PublishStats(ctx context.Context) error {
	if p == nil {
		return errNilPlugin
	}
	if p.err != nil {
		return p.err
	}
	p.pub.mu.Lock()
	defer p.pub.mu.Unlock()
	p.reg.activeSeen.Store(false) // from here on, a change arms the timer again
	now := p.pub.clock()
	cur := p.Stats()
	args := p.fleetArgs(cur)
	if len(args) == 0 {
		return nil
	}
	key := p.fleetKey(now())
	if err := publishScript.Run(ctx, p.rdb, []string{key}, args...).Err(); err != nil {
		return fmt.Errorf("%w: publishing the counters to %s (sent with the next publication): %w", ErrRedis, key, err)
	}
	p.pub.published = cur
	return nil
}

// fleetArgs returns publishScript's arguments for what changed since the
// last publication: TTL ms, plugin id, then field and increment pairs.
// Fields are "<kind>\x00<tag>\x00<counter>"; the total's kind and tag are
// empty, and the tags beyond MaxFleetTags add up under the kind "other".
func (p *Plugin) fleetArgs(cur Stats) []any {
	last := p.pub.published
	total := cur.Total.sub(last.Total)
	if total.sum() == 0 {
		return nil
	}
	type delta struct {
		tag string
		c   Counters
		n   int64
	}
	var ds []delta
	for tag, c := range cur.Tags {
		d := c.sub(last.Tags[tag])
		if n := d.sum(); n != 0 {
			ds = append(ds, delta{tag, d, n})
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].n > ds[j].n || ds[i].n == ds[j].n && ds[i].tag < ds[j].tag })
	args := []any{ms(fleetKeyTTL), p.tokenID}
	put := func(kind TagKind, tag string, c Counters) {
		for _, f := range counterFields {
			if v := *f.get(&c); v != 0 {
				args = append(args, string(kind)+"\x00"+tag+"\x00"+f.Name, v)
			}
		}
	}
	put("", "", total)
	var other Counters
	for i, d := range ds {
		if i < MaxFleetTags {
			put(p.reg.kind(d.tag), d.tag, d.c)
		} else {
			other.add(d.c)
		}
	}
	put("other", "", other)
	return args
}

// fleetKey returns the key of the minute of t.
func (p *Plugin) fleetKey(t time.Time) string {
	return p.set.Prefix + statsMark + strconv.FormatInt(t.Unix()/60, 10)
}

// FleetStats returns the counters every plugin sharing this Prefix
// published in the last FleetWindow (PublishStats): one read of each
// minute's hash, in one pipeline. What a plugin counted since its last
// publication is not in it yet.
func (p *Plugin) FleetStats(ctx context.Context) (Fleet, error) {
	if p == nil {
		return Fleet{}, errNilPlugin
	}
	if p.err != nil {
		return Fleet{}, p.err
	}
	p.pub.mu.Lock()
	now := p.pub.clock()
	p.pub.mu.Unlock()
	minutes := int(FleetWindow / time.Minute)
	cur := now().Unix() / 60
	pipe := p.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, 0, minutes+1)
	for m := cur - int64(minutes); m <= cur; m++ {
		cmds = append(cmds, pipe.HGetAll(ctx, p.set.Prefix+statsMark+strconv.FormatInt(m, 10)))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return Fleet{}, redisErr("HGETALL", p.set.Prefix+statsMark+"…", err)
	}
	f := Fleet{Tags: map[string]Counters{}, Kinds: map[string]TagKind{}}
	procs := map[string]bool{}
	index := map[string]int{}
	for i, cf := range counterFields {
		index[cf.Name] = i
	}
	for i, cmd := range cmds {
		start := time.Unix((cur-int64(minutes)+int64(i))*60, 0)
		minute := FleetMinute{Start: start}
		for field, v := range cmd.Val() {
			kind, rest, _ := strings.Cut(field, "\x00")
			tag, name, ok := strings.Cut(rest, "\x00")
			if kind == procField {
				procs[rest] = true
				continue
			}
			j, known := index[name]
			n, err := strconv.ParseInt(v, 10, 64)
			if !ok || !known || err != nil {
				continue // written by another version: skipped
			}
			get := counterFields[j].get
			switch {
			case kind == "" && tag == "":
				*get(&minute.Counters) += n
			case kind == "other":
				c := f.Tags[FleetOther]
				*get(&c) += n
				f.Tags[FleetOther] = c
				f.Kinds[FleetOther] = KindFunction
			case kind != "":
				c := f.Tags[tag]
				*get(&c) += n
				f.Tags[tag] = c
				f.Kinds[tag] = TagKind(kind)
			}
		}
		f.Total.add(minute.Counters)
		f.Minutes = append(f.Minutes, minute)
	}
	f.Processes = len(procs)
	return f, nil
}

// publishScript adds increments to one minute's hash, marks the plugin as
// having published in it, and makes the hash expire. ARGV: TTL ms, plugin
// id, then field and increment pairs.
var publishScript = redis.NewScript(`
for i = 3, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], '` + procField + `\0' .. ARGV[2], '1')
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
`)
