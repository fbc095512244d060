"""The Lua scripts of ``RedisRateStore``: the slot reservation, the throttle and the snapshot,
each run atomically by Redis. They share a prelude: the server clock, number parsing, the
output format and the rate in force (``pacing.adaptive.rate_in_force`` in Lua).

Hazards: a Lua number returned as a reply is truncated to an integer, so times and rates go
back as decimal strings; ``TIME`` before a write needs script effects replication, the default
from Redis 5 (and the only mode from 7).
"""

from __future__ import annotations

PRELUDE = """
local function num(v)
  if v == false or v == nil or v == '' then return nil end
  return tonumber(v)
end
local function f(x) return string.format('%.6f', x) end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function rate_in_force(ceiling, base, at, now, growth, unlimited_after)
  if base == nil or at == nil then return ceiling end
  local age = math.max(0, now - at)
  if ceiling == nil and age >= unlimited_after then return nil end
  local recovered = base * growth ^ math.min(age, 600)
  if ceiling == nil then return recovered end
  return math.min(ceiling, recovered)
end
"""

# KEYS[1] the route's hash. ARGV: ceiling ('' for none), count, horizon, margin, growth,
# unlimited_after, ttl. Returns {start, spacing, granted, now, rate ('' when unlimited)}.
RESERVE = (
    PRELUDE
    + """
local now = clock()
local row = redis.call('HMGET', KEYS[1], 'tat', 'base', 'at', 'paused')
local tat, paused = num(row[1]) or 0, num(row[4]) or 0
local rate = rate_in_force(num(ARGV[1]), num(row[2]), num(row[3]), now,
                           tonumber(ARGV[5]), tonumber(ARGV[6]))
if rate == nil then return {f(now), '0', 0, f(now), ''} end
local count, horizon = tonumber(ARGV[2]), tonumber(ARGV[3])
local spacing = (1 + tonumber(ARGV[4])) / rate
local start = math.max(tat, now, paused)
local granted = 0
if start - now <= horizon then
  granted = math.min(count, math.floor((now + horizon - start) / spacing) + 1)
  redis.call('HSET', KEYS[1], 'tat', f(start + granted * spacing))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
end
return {f(start), string.format('%.9f', spacing), granted, f(now), string.format('%.9g', rate)}
"""
)

# KEYS[1] the route's hash. ARGV: after, excess, ttl. The next free slot becomes
# max(tat, after) + excess (a send later than the margin allows).
PUSH = """
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0') or 0
local moved = math.max(tat, tonumber(ARGV[1])) + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', moved))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

# KEYS[1] the route's hash, KEYS[2] the throttled set. ARGV: route, ceiling ('' for none),
# observed, retry_after (0: none), debounce, min_rate, first_floor, growth, unlimited_after,
# ttl, remembered. Returns {base, throttled_at, paused_until, now, halved ('1' or '0')}.
THROTTLE = (
    PRELUDE
    + """
local now = clock()
local row = redis.call('HMGET', KEYS[1], 'tat', 'base', 'at', 'paused')
local base, at = num(row[2]), num(row[3])
local pause = math.max(num(row[4]) or 0, now + tonumber(ARGV[4]))
local halved = at == nil or base == nil or now - at >= tonumber(ARGV[5])
if halved then
  local current = rate_in_force(num(ARGV[2]), base, at, now, tonumber(ARGV[8]),
                                tonumber(ARGV[9]))
  if current == nil then current = math.max(tonumber(ARGV[3]), tonumber(ARGV[7])) end
  base = math.max(tonumber(ARGV[6]), current / 2)
  at = now
end
redis.call('HSET', KEYS[1], 'base', f(base), 'at', f(at), 'paused', f(pause))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[10]))
redis.call('ZADD', KEYS[2], f(math.max(at, pause)), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. f(now - tonumber(ARGV[11])))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[10]))
return {f(base), f(at), f(pause), f(now), halved and '1' or '0'}
"""
)

# KEYS[1] the throttled set. ARGV: the routes' key prefix, remembered. Returns {now, {route,
# base, throttled_at, paused_until}...}. The route hashes share the set's hash tag.
SNAPSHOT = (
    PRELUDE
    + """
local now = clock()
local out = {f(now)}
local since = '(' .. f(now - tonumber(ARGV[2]))
for _, route in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf')) do
  local row = redis.call('HMGET', ARGV[1] .. route, 'base', 'at', 'paused')
  if row[2] then
    table.insert(out, {route, row[1] or '', row[2] or '', row[3] or ''})
  end
end
return out
"""
)
