package cacheme

import "github.com/redis/go-redis/v9"

// The Redis scripts. They rely on the layout the package documentation's
// "Redis layout" describes: an entry is a string key whose value starts
// with a fixed header (header.go) followed by the groups it joined and its
// encoded value; group, tag and hash-index sets are sorted sets of entry
// names scored by expiry with the marker "". Times are the Redis server's
// (TIME).
//
// Every script's keys are in one Cluster slot: readScript, releaseScript
// and joinScript touch one key; the batch scripts (invalidateScript,
// markScript, dropScript) get keys of one slot (see slots.go); storeScript
// gets the entry and its sets only on a single server (see store.go), and
// the entry alone otherwise.
//
// Anything may have been written to an entry's key. A header that does not
// parse (see luaHeader: magic, state, fixed-width digits) or a key of
// another type is corrupt: the scripts treat it as absent, never raise an
// error for it, and overwrite or delete it. A lease whose header is corrupt
// can no longer store, so a corrupt key never lets a stale value in.

// luaHeader reads and writes the entry header (see header.go for the
// offsets; Lua's are one-based). parse returns nil for anything but a
// well-formed header.
const luaHeader = `
local HL = 102
local NOTOK = string.rep('-', 32)
local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function nowus()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function num(x) return string.format('%.0f', x) end
local function pad(x, w) return string.format('%0' .. w .. '.0f', x) end
local function dig(v, a, b)
  local s = string.sub(v, a, b)
  if string.find(s, '^%d+$') then return tonumber(s) end
  return nil
end
local function parse(v)
  if type(v) ~= 'string' or #v < HL or string.sub(v, 1, 2) ~= 'C2' then return nil end
  local h = {st = string.sub(v, 3, 3), x = dig(v, 4, 16), le = dig(v, 17, 29), lg = dig(v, 30, 45),
    tok = string.sub(v, 46, 77), keep = dig(v, 78, 90), w = dig(v, 91, 94), gl = dig(v, 95, 102)}
  if not (h.x and h.le and h.lg and h.keep and h.w and h.gl) then return nil end
  if h.st ~= 'v' and h.st ~= 's' and h.st ~= '-' then return nil end
  return h
end
local function header(st, x, le, lg, tok, keep, w)
  return 'C2' .. st .. pad(x, 13) .. pad(le, 13) .. pad(lg, 16) .. tok .. pad(keep, 13) .. pad(w, 4) .. pad(0, 8)
end
local function leased(h) return h.tok ~= NOTOK end
-- A lease is live until its expiry; one taken by SET NX (expiry 0) lives
-- as long as its key.
local function leaseLive(h, t) return h.tok ~= NOTOK and (h.le == 0 or h.le > t) end
`

// luaJoin adds member to a group, tag or hash-index set k (a sorted set
// scored by expiry, in microseconds), pruning expired members. Members are
// scored one lease TTL past the value's own expiry, so that a member never
// leaves its set before its value. Every join also counts one more on the
// set's version (the member VER, scored VERBASE plus the joins so far, so
// that no expiry prunes it and no range of live members includes it):
// dropScript drops the members markScript read only if no join came in
// between.
const luaJoin = `
local VER, VERBASE = '\001', 4e15
local function join(k, member, t, ttl, lease)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. num(t))
  local exp = t + ttl * 1000 + lease * 1000
  local old = redis.call('ZSCORE', k, member)
  if old and tonumber(old) >= exp then exp = tonumber(old) + 1 end
  redis.call('ZADD', k, num(exp), member)
  redis.call('ZADD', k, 'NX', num(VERBASE), VER)
  redis.call('ZINCRBY', k, 1, VER)
  local keep = ttl + lease
  if redis.call('PTTL', k) < keep then redis.call('PEXPIRE', k, keep) end
end
`

// readScript is the slow path of a read, for an entry that the fast path
// (SET NX GET, see store.go) found neither valid nor absent. It returns
// {1, v} for a valid value (stored in between), {2, v} for an invalidated
// value that may be served while another caller recomputes it (stale),
// {3, ms} when another caller holds the lease (wait; ms is how long the
// lease has left, and the caller is counted in the header's waiters), and
// {4, us} when this caller took the lease and must compute (us: the server
// time of the lease, in microseconds), {4, us, v} when it did so and kept
// the invalidated value v for stale serving. It adds 16 to the status when the
// key was corrupt (dropped). ARGV: stale ("1"/"0"), token (32 bytes),
// lease ms.
var readScript = redis.NewScript(luaHeader + `
local k = KEYS[1]
local t = nowms()
local lease = tonumber(ARGV[3])
local bad = 0
local v = redis.pcall('GET', k)
if type(v) == 'table' then
  redis.call('DEL', k)
  v, bad = false, 16
end
local h = parse(v)
if v and not h then
  redis.call('DEL', k)
  v, bad = false, 16
end
if h and h.st == 'v' then return {1 + bad, v} end
local live = h and h.st == 's' and h.x > t
if h and leaseLive(h, t) then
  if live and ARGV[1] == '1' then return {2 + bad, v} end
  redis.call('SETRANGE', k, 90, pad(math.min(h.w + 1, 9999), 4))
  local left = h.le - t
  if h.le == 0 then left = redis.call('PTTL', k) end
  return {3 + bad, math.max(left, 1)}
end
local g = nowus()
if live and ARGV[1] == '1' then
  redis.call('SETRANGE', k, 16, pad(t + lease, 13) .. pad(g, 16) .. ARGV[2])
  if redis.call('PTTL', k) < lease then redis.call('PEXPIRE', k, lease) end
  return {4 + bad, num(g), v}
else
  redis.call('SET', k, header('-', 0, t + lease, g, ARGV[2], 0, h and h.w or 0), 'PX', lease)
end
return {4 + bad, num(g)}
`)

// storeScript stores a value if the caller still holds the lease: no
// invalidation revoked it and it has not run out. KEYS[1] is the entry;
// on a single server KEYS[2..] are the sets it joins (tag, groups, hash
// index), and a set invalidated at or after the lease was granted refuses
// the value (its marker "" is scored by the invalidation time plus one
// lease TTL): the check and the joins are atomic with the store.
//
// The lease's grant time is in the header for readScript's leases (µs).
// A lease taken by SET NX carries no server time: its grant is read off
// the key's own expiry (PEXPIRETIME less the lease TTL: SET NX set it, and
// nothing changes a leased key's expiry while its lease stands), to the
// millisecond. A set invalidated within that millisecond may have been
// invalidated just before the grant or just after: the script stores
// nothing, keeps the lease and returns {2, waiters, now µs}, and the
// caller, which knows when its computation started by its own clock, sends
// the store again with ARGV[5]: a lower bound of that start on this
// server's clock (see store), against which the sets are checked instead.
// Either way a set invalidated at or after the computation may have begun
// refuses the value: the check errs on the side of refusing, never of
// storing a stale value. A store with ARGV[5] that a set refuses keeps the
// lease and returns {3, waiters, now µs}: a computation that starts after
// this reply starts after every invalidation the sets hold, and may store
// with ARGV[5] = that time, exactly (see compute).
//
// Returns {1, waiters} if stored, {0, waiters} if not (the lease is lost
// or overtaken); waiters is how many callers of other processes registered
// in the header, to be woken. ARGV: token, value (header, groups, encoded
// value), ttl ms, lease ms, the computation's start (µs) or "".
var storeScript = redis.NewScript(luaHeader + luaJoin + `
local k = KEYS[1]
local t = nowms()
local lease = tonumber(ARGV[4])
local v = redis.pcall('GETRANGE', k, 0, HL - 1)
local h = parse(v)
if not h then return {0, 0} end
if h.tok ~= ARGV[1] then return {0, h.w} end
local tus = nowus()
local g, gms = h.lg, nil
if h.le == 0 then
  if ARGV[5] ~= '' then
    g = tonumber(ARGV[5])
  else
    -- An expiry more than a lease ahead was changed: no grant to read.
    -- One millisecond ahead is rounding (miniredis), taken off. The clock
    -- is read again after PEXPIRETIME: miniredis adds a key's TTL to the
    -- time of that call, and a slow script (-race) must not look like a
    -- changed expiry.
    local exp = redis.call('PEXPIRETIME', k)
    local te = nowms()
    if exp < 0 or exp - te > lease + 1 then return {0, h.w} end
    gms = (math.min(exp, te + lease) - lease) * 1000
    g = gms
  end
elseif not (h.le > t) then
  return {0, h.w}
end
local ambiguous = false
for i = 2, #KEYS do
  local s = redis.call('ZSCORE', KEYS[i], '')
  if s and tonumber(s) >= tus then
    local m = tonumber(s) - lease * 1000
    if m >= g then
      if gms and m < gms + 1000 then
        ambiguous = true
      elseif ARGV[5] ~= '' then
        return {3, h.w, num(nowus())}
      else
        return {0, h.w}
      end
    end
  end
end
if ambiguous then return {2, h.w, num(nowus())} end
local ttl = tonumber(ARGV[3])
redis.call('SET', k, ARGV[2], 'PX', ttl)
local member = string.sub(k, 1, #k - 1)
for i = 2, #KEYS do join(KEYS[i], member, tus, ttl, lease) end
return {1, h.w}
`)

// releaseScript gives up a lease after a failed or refused computation,
// so that waiters take over at once, and returns how many callers of other
// processes registered to be woken (resetting the count), whoever holds
// the lease now. ARGV: token.
var releaseScript = redis.NewScript(luaHeader + `
local k = KEYS[1]
local h = parse(redis.pcall('GETRANGE', k, 0, HL - 1))
if not h then return 0 end
local w = h.w
if h.tok == ARGV[1] then
  if h.st == '-' then
    redis.call('DEL', k)
    return w
  end
  local t = nowms()
  redis.call('SETRANGE', k, 16, pad(0, 13) .. pad(0, 16) .. NOTOK)
  if h.st == 's' then redis.call('PEXPIRE', k, math.max(h.x - t, 1)) end
end
if w > 0 then redis.call('SETRANGE', k, 90, pad(0, 4)) end
return w
`)

// invalidateScript invalidates entries (KEYS, of one slot) and revokes
// their leases, so that a computation in progress cannot store its result.
// A valid value stored with a stale keep time is marked invalid (state
// "s") and kept for stale serving at most that long (its key's TTL is
// brought forward); one without is deleted at once. A revoked lease that
// callers of other processes wait for leaves its waiter count behind
// (until the lease would have run out), so that its holder, whose store
// then fails, still wakes them. It returns how many entries it hit: a
// valid value or a live lease. A corrupt key is deleted.
//
// Then it publishes the keys it was given (NUL-separated) on ARGV[1], the
// channel of the Prefix's invalidations (localChannel), for the local
// layers of every process (local.go). The message leaves in the same
// atomic step as the invalidation: no invalidation is done without its
// message having been sent. On Cluster a PUBLISH goes to every node over
// the cluster bus, so a subscriber on any node gets it.
var invalidateScript = redis.NewScript(luaHeader + `
local t = nowms()
local n = 0
local pcall, call, sub = redis.pcall, redis.call, string.sub
local kept = {} -- keep ms -> the state and expiry to write, made once
for i = 1, #KEYS do
  local k = KEYS[i]
  local v = pcall('GETRANGE', k, 0, HL - 1)
  if type(v) == 'table' then
    call('DEL', k)
  elseif v ~= '' and sub(v, 1, 3) == 'C2v' and #v == HL then
    -- A valid value (the common case; it holds no lease): only its keep
    -- time matters.
    n = n + 1
    local keep = tonumber(sub(v, 78, 90))
    if keep and keep > 0 then
      -- Kept at most keep ms: the key's expiry is brought forward, never
      -- pushed back (LT); its own expiry may come sooner than the header's.
      local w = kept[keep]
      if not w then
        w = 's' .. pad(t + keep, 13)
        kept[keep] = w
      end
      call('SETRANGE', k, 2, w)
      call('PEXPIRE', k, keep, 'LT')
    else
      call('DEL', k)
    end
  elseif v ~= '' then
    local h = parse(v)
    if not h or h.st == 'v' then
      redis.call('DEL', k)
    elseif leased(h) then
      local live = leaseLive(h, t)
      if live then n = n + 1 end
      if h.st == 's' and h.x > t then
        redis.call('SETRANGE', k, 16, pad(0, 13) .. pad(0, 16) .. NOTOK)
        redis.call('PEXPIRE', k, math.max(h.x - t, 1))
      elseif live and h.w > 0 then
        local left = h.le - t
        if h.le == 0 then left = redis.call('PTTL', k) end
        redis.call('SET', k, header('-', 0, 0, 0, NOTOK, 0, h.w), 'PX', math.max(left, 1))
      else
        redis.call('DEL', k)
      end
    end
  end
end
if ARGV[1] and ARGV[1] ~= '' then call('PUBLISH', ARGV[1], table.concat(KEYS, '\0')) end
return n
`)

// joinScript adds an entry to one group, tag or hash-index set, on the
// path for several servers (Cluster, Ring), where the store cannot check
// the sets itself. It returns {"1", now, invalidation time or -1}, both by
// this server's clock in microseconds, for the caller to compare with its
// own monotonic clock (see join). ARGV: member, ttl ms, lease ms.
var joinScript = redis.NewScript(luaHeader + luaJoin + `
local t = nowus()
local lease = tonumber(ARGV[3])
local inv = -1
local s = redis.call('ZSCORE', KEYS[1], '')
if s and tonumber(s) >= t then inv = tonumber(s) - lease * 1000 end
join(KEYS[1], ARGV[1], t, tonumber(ARGV[2]), lease)
return {'1', num(t), num(inv)}
`)

// markScript marks group, tag or hash-index sets (KEYS, of one slot)
// invalidated: it prunes expired members, leaves the marker "" for one
// lease TTL, so that computations which started before this moment cannot
// join a set afterwards, and returns for each key its version and its live
// members: {version, member, member...}. The members stay until dropScript
// removes them, once their entries are marked (see invalidate.go). ARGV:
// lease ms.
var markScript = redis.NewScript(luaHeader + luaJoin + `
local t = nowus()
local lease = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. num(t))
  local m = redis.call('ZRANGEBYSCORE', k, num(t), '(' .. num(VERBASE))
  table.insert(m, 1, redis.call('ZSCORE', k, VER) or '0')
  out[i] = m
  redis.call('ZADD', k, num(t + lease * 1000), '')
  if redis.call('PTTL', k) < lease then redis.call('PEXPIRE', k, lease) end
end
return out
`)

// dropScript removes from group, tag or hash-index sets (KEYS, of one
// slot) the members markScript read, once their entries are marked: every
// member but the marker, in one range, if the set's version is still the
// one markScript returned (no join came in between, so every member there
// was read). A set whose version changed keeps its members: they expire
// with their values, or leave at the set's next invalidation. A set left
// with only its marker and version expires with the marker. ARGV: lease
// ms, then each key's version.
var dropScript = redis.NewScript(luaHeader + luaJoin + `
local lease = tonumber(ARGV[1])
local n = 0
for i = 1, #KEYS do
  local k = KEYS[i]
  if (redis.call('ZSCORE', k, VER) or '0') == ARGV[i + 1] then
    local m = redis.call('ZSCORE', k, '')
    if m then
      n = n + redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. m)
      n = n + redis.call('ZREMRANGEBYSCORE', k, '(' .. m, '(' .. num(VERBASE))
    else
      n = n + redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. num(VERBASE))
    end
  end
  if redis.call('ZCARD', k) <= 2 and redis.call('ZSCORE', k, '') then
    if redis.call('PTTL', k) > lease then redis.call('PEXPIRE', k, lease) end
  end
end
return n
`)
