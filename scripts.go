package cacheme

import "github.com/redis/go-redis/v9"

// The Redis scripts. Each one touches exactly one key (KEYS[1]), so every
// script is valid on Redis Cluster whatever the key names are. They rely on
// the layout the package documentation's "Redis layout" describes: an
// entry f of a hash is the fields v:f, x:f, d:f, l:f and t:f, the hash has
// "#s", and group and tag sets are sorted sets of entry names scored by
// expiry with the marker "". Times are the Redis server's (TIME).
//
// Anything may have been written to these fields. A time or size that is
// not a finite number (see luaNum) is corrupt: the scripts treat it as
// absent or run out (a value as expired, a lease as run out, "#s" as 0),
// never raise an error for it, and overwrite it. A lease whose time is
// corrupt can no longer store, so a corrupt field never lets a stale value
// in.

const luaNow = `
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// luaNum is tonumber for the times and sizes the scripts keep in hash
// fields: nil for anything that is not a finite number (garbage, "nan",
// "inf", a missing field), so that no comparison can raise an error.
const luaNum = `
local function tonum(s)
  local n = tonumber(s)
  if n and n == n and n > -math.huge and n < math.huge then return n end
  return nil
end
`

// luaNowUs gives the server time in microseconds, and formats such numbers
// exactly (Lua's default number format keeps 14 digits only).
const luaNowUs = `
local function nowus()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function num(x) return string.format('%.0f', x) end
`

// readScript returns {1, v} for a valid value (hit), {2, v} for an
// invalidated value that may be served while another caller recomputes it
// (stale), {3} when another caller is computing it (wait), {4} when this
// caller got the lease and must compute it (with the server time of the
// lease, in microseconds), and {0} when ARGV[5] is "0" (peek: never take
// the lease) and there is no valid value. Unless it peeks, it adds 16 to
// the status when the entry's expiry (x:f) or lease time (t:f) was
// corrupt: such a value was dropped, such a lease is taken over.
// ARGV: field, stale ("1"/"0"), token, lease ms, acquire ("1"/"0"), groups
// ("1"/"0").
var readScript = redis.NewScript(luaNow + luaNowUs + luaNum + `
local f = ARGV[1]
local t = now()
local r = redis.call('HMGET', KEYS[1], 'v:'..f, 'x:'..f, 'd:'..f, 'l:'..f, 't:'..f)
local x = tonum(r[2])
local live = r[1] and x and x > t
local function groups()
  if ARGV[6] ~= '1' then return '' end
  return redis.call('HGET', KEYS[1], 'g:'..f) or ''
end
if live and not r[3] then return {1, r[1], groups()} end
if ARGV[5] ~= '1' then return {0} end
local lt = tonum(r[5])
local bad = 0
if (r[2] and not x) or (r[5] and not lt) then bad = 16 end
if r[2] and not x then redis.call('HDEL', KEYS[1], 'v:'..f, 'x:'..f, 'd:'..f, 's:'..f, 'g:'..f) end
if r[4] and lt and lt > t then
  if live and ARGV[2] == '1' then return {2 + bad, r[1], groups()} end
  return {3 + bad}
end
if not live or ARGV[2] ~= '1' then
  redis.call('HDEL', KEYS[1], 'v:'..f, 'x:'..f, 'd:'..f, 's:'..f, 'g:'..f)
end
local lease = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'l:'..f, ARGV[3], 't:'..f, t + lease)
if redis.call('PTTL', KEYS[1]) < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return {4 + bad, num(nowus())}
`)

// storeScript stores a value if the caller still holds the lease: no
// invalidation revoked it and it has not run out (a corrupt lease time
// counts as run out). With it go how long an invalidation may keep it for
// stale serving (s:f, absent for 0: deleted at once) and the groups it
// joined (g:f, absent for none). Returns 1 if stored, 2 if stored and a
// sweep found corrupt metadata (a corrupt "#s", or times that are not
// numbers, whose entries it dropped). ARGV: field, token, value, ttl ms,
// stale keep ms, groups.
//
// A hash whose fields outlive their values (expired entries, leases of
// crashed processes) is swept by the store that finds it more than twice
// as large as after the last sweep (the field "#s"), so the sweeps cost
// O(1) per store on average and a hash holds at most about twice its live
// entries.
var storeScript = redis.NewScript(luaNow + luaNum + `
local f = ARGV[1]
local t = now()
local r = redis.call('HMGET', KEYS[1], 'l:'..f, 't:'..f)
local lt = tonum(r[2])
if r[1] ~= ARGV[2] or not lt or not (lt > t) then return 0 end
local ttl = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'v:'..f, ARGV[3], 'x:'..f, t + ttl)
redis.call('HDEL', KEYS[1], 'd:'..f, 'l:'..f, 't:'..f)
if tonumber(ARGV[5]) > 0 then redis.call('HSET', KEYS[1], 's:'..f, ARGV[5]) else redis.call('HDEL', KEYS[1], 's:'..f) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'g:'..f, ARGV[6]) else redis.call('HDEL', KEYS[1], 'g:'..f) end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
local n = redis.call('HLEN', KEYS[1])
local s = redis.call('HGET', KEYS[1], '#s')
local last = tonum(s) or 0
local bad = 1
if s and not tonum(s) then
  bad = 2
  redis.call('HDEL', KEYS[1], '#s')
end
if n > 64 and n > 2 * last then
  local h = redis.call('HGETALL', KEYS[1])
  local dead = {}
  for i = 1, #h, 2 do
    local kind, g = string.sub(h[i], 1, 2), string.sub(h[i], 3)
    local e = tonum(h[i + 1])
    if (kind == 'x:' or kind == 't:') and not e then bad = 2 end
    if (kind == 'x:' or kind == 't:') and not (e and e > t) then
      if kind == 'x:' then
        dead[#dead + 1] = 'v:'..g; dead[#dead + 1] = 'x:'..g; dead[#dead + 1] = 'd:'..g
        dead[#dead + 1] = 's:'..g; dead[#dead + 1] = 'g:'..g
      else
        dead[#dead + 1] = 'l:'..g; dead[#dead + 1] = 't:'..g
      end
    end
  end
  for i = 1, #dead, 1000 do
    redis.call('HDEL', KEYS[1], unpack(dead, i, math.min(i + 999, #dead)))
  end
  redis.call('HSET', KEYS[1], '#s', redis.call('HLEN', KEYS[1]))
end
return bad
`)

// releaseScript gives up a lease after a failed computation, so that
// waiters take over at once. ARGV: field, token.
var releaseScript = redis.NewScript(`
local f = ARGV[1]
if redis.call('HGET', KEYS[1], 'l:'..f) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], 'l:'..f, 't:'..f)
end
return 0
`)

// invalidateScript invalidates the given fields (all fields of the hash
// when none is given) and revokes their leases, so that a computation in
// progress cannot store its result. A valid value stored with a stale
// keep time (s:f) is marked invalid (d:f) and kept for stale serving at
// most that long (its expiry is brought forward); one without is deleted
// at once, as is a value that had expired. It returns how many entries it
// hit: a valid value or a live lease. A corrupt expiry or lease time counts
// as run out. Once done, a hash small enough to read whole has its key
// expire with its last live field, and a hash left with nothing but its
// sweep size is deleted, so that invalidated values never hold memory for
// the rest of their TTL.
var invalidateScript = redis.NewScript(luaNow + luaNum + `
local fields = ARGV
if #fields == 0 then
  fields = {}
  local seen = {}
  for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
    local kind, f = string.sub(k, 1, 2), string.sub(k, 3)
    if (kind == 'v:' or kind == 'l:') and not seen[f] then
      seen[f] = true
      fields[#fields + 1] = f
    end
  end
end
local t = now()
local n = 0
for _, f in ipairs(fields) do
  local r = redis.call('HMGET', KEYS[1], 'v:'..f, 'x:'..f, 'd:'..f, 'l:'..f, 't:'..f, 's:'..f)
  local hit = false
  local x, lt, keep = tonum(r[2]), tonum(r[5]), tonum(r[6])
  local live = r[1] and x and x > t
  if live and not r[3] then
    hit = true
    if keep and keep > 0 then
      redis.call('HSET', KEYS[1], 'd:'..f, '1')
      if x > t + keep then redis.call('HSET', KEYS[1], 'x:'..f, t + keep) end
    else
      live = false
    end
  end
  if r[1] and not live then
    redis.call('HDEL', KEYS[1], 'v:'..f, 'x:'..f, 'd:'..f, 's:'..f, 'g:'..f)
  end
  if r[4] then
    redis.call('HDEL', KEYS[1], 'l:'..f, 't:'..f)
    if lt and lt > t then hit = true end
  end
  if hit then n = n + 1 end
end
local size = redis.call('HLEN', KEYS[1])
if size == 1 and redis.call('HEXISTS', KEYS[1], '#s') == 1 then
  redis.call('DEL', KEYS[1])
elseif size > 0 and size <= 128 then
  local last = 0
  local h = redis.call('HGETALL', KEYS[1])
  for i = 1, #h, 2 do
    local kind = string.sub(h[i], 1, 2)
    if kind == 'x:' or kind == 't:' then
      local e = tonum(h[i + 1])
      if not e then last = nil; break end
      if e > last then last = e end
    end
  end
  if last then
    local left = math.max(last - t, 1)
    local pttl = redis.call('PTTL', KEYS[1])
    if pttl < 0 or pttl > left then redis.call('PEXPIRE', KEYS[1], left) end
  end
end
return n
`)

// joinScript adds an entry to a group or tag set (a sorted set scored by
// expiry, in microseconds), pruning expired members. Members are scored one
// lease TTL past the value's own expiry, so that a member never leaves its
// set before its value. The member "" marks the set's last invalidation,
// scored by that time plus the lease TTL. A computation that started before
// the invalidation may have read older data and must not store: when the
// set is on the server that granted the computation's lease, ARGV[4] is the
// lease's time on this server's clock, and the script decides exactly
// (returns {"0"} when invalidated at or after it). Otherwise ARGV[4] is ""
// and the script returns {"1", now, invalidation time or -1}, both by this
// server's clock in microseconds, for the caller to compare with its own
// monotonic clock (see join). ARGV: member, ttl ms, lease ms, lease time us
// or "".
var joinScript = redis.NewScript(luaNowUs + `
local t = nowus()
local lease = tonumber(ARGV[3]) * 1000
local inv = -1
local s = redis.call('ZSCORE', KEYS[1], '')
if s and tonumber(s) >= t then
  inv = tonumber(s) - lease
  if ARGV[4] ~= '' and inv >= tonumber(ARGV[4]) then return {'0'} end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. num(t))
local ttl = tonumber(ARGV[2])
local exp = t + ttl * 1000 + lease
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
-- Every join changes the member's score (dropScript relies on it).
if old and tonumber(old) >= exp then exp = tonumber(old) + 1 end
redis.call('ZADD', KEYS[1], num(exp), ARGV[1])
local keep = ttl + tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return {'1', num(t), num(inv)}
`)

// markScript marks a group or tag set invalidated: it prunes expired
// members, leaves the marker "" for one lease TTL, so that computations
// which started before this moment cannot join the set afterwards, and
// returns the live members with their scores. The members stay until
// dropScript removes them, once their entries are marked (see
// invalidate.go). ARGV: lease ms.
var markScript = redis.NewScript(luaNowUs + `
local t = nowus()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. num(t))
local m = redis.call('ZRANGEBYSCORE', KEYS[1], num(t), '+inf', 'WITHSCORES')
local lease = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], num(t + lease * 1000), '')
if redis.call('PTTL', KEYS[1]) < lease then redis.call('PEXPIRE', KEYS[1], lease) end
return m
`)

// dropScript removes members from a group or tag set, each only if its
// score is still the given one: a member that joined again since (a new
// computation, see joinScript) keeps its place. A set left with only its
// marker expires with the marker. ARGV: lease ms, member, score, ...
var dropScript = redis.NewScript(`
local n = 0
for i = 2, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
if redis.call('ZCARD', KEYS[1]) == 1 and redis.call('ZSCORE', KEYS[1], '') then
  local lease = tonumber(ARGV[1])
  if redis.call('PTTL', KEYS[1]) > lease then redis.call('PEXPIRE', KEYS[1], lease) end
end
return n
`)
