"""The Lua scripts of `RedisSessionStore`: every read-modify-write of the store, atomic on the
server.

Redis runs one script at a time, so each script below is one atomic step however many app
instances share the server: a quota check and the insert it admits, a version check and the
write it guards, an expired session's removal and the right to report it.

Layout of one store (prefix ``P``, e.g. ``{aiotp}:``; the braces are a cluster hash tag, so that
every key of one store lives in one slot)::

    P s:<id>    hash: the session (fields below); PEXPIRE = its deadline + the grace
    P exp       sorted set: id -> deadline (last access + ttl), every session held
    P hb        sorted set: id -> last heartbeat + heartbeat timeout, sessions awaiting input
    P stats     hash: created, deleted, expired, gc, cleanup_runs (totals of every instance)
    P ev:<id>   pub/sub channel of the session's events

Session hash fields: ``la`` last access, ``ttl``, ``born`` created_at, ``hb`` last heartbeat,
``aw`` awaiting input ("1"/"0"), ``st`` state, ``lw`` last worker id (absent: None), ``acc``
accesses, ``v`` version (bumped by every change but a touch: `update` is a compare-and-set on
it), ``m`` metadata, ``p`` programs, ``x`` the other stats, ``a`` affinity (msgpack maps).

A store's scripts are built for it (`build`): its prefix, the grace in ms a key outlives its
deadline and the heartbeat timeout are written into the source, so a call sends only what
changes: ``KEYS[1]`` the session's key (the id is read from it) and ``ARGV[1]`` the time (empty:
the server's own clock, shared by every instance), then the operation's own arguments. Replies
are one msgpack string (`cmsgpack`): one bulk reply is much cheaper for the client to read than
an array of fields. Every argument and reply costs a round trip's worth of parsing on both ends,
which is most of what these scripts cost next to a plain GET.

Removal (`claim`) is the one place a session leaves: it deletes the key and both index entries,
counts the reason, and publishes the ``end`` event, and the script returns the session's last
fields so that the calling instance, and only it, runs the removal hooks.
"""

from __future__ import annotations

import hashlib

from aiotp.session_store.redis_codec import MAX_TTL

__all__ = ["FIELDS", "Scripts", "build"]

#: The order of the fields in every reply that carries a session.
FIELDS = ("la", "ttl", "born", "hb", "aw", "st", "lw", "acc", "v", "m", "p", "x", "a")

_PRELUDE = """
local P = @PREFIX@
local EXP, HB, STATS = P .. 'exp', P .. 'hb', P .. 'stats'
local NOW_S = ARGV[1]
local NOW
if NOW_S == '' then  -- seconds.micros, built by hand: string.format costs more than TIME
  local t = redis.call('TIME')
  NOW_S = t[1] .. '.' .. string.rep('0', 6 - #t[2]) .. t[2]
  NOW = tonumber(NOW_S)
else
  NOW = tonumber(NOW_S)
end
local GRACE = @GRACE@
local SLACK = @SLACK@
local MAX_TTL = @MAXTTL@
local HBT = @HBT@
local KEY = KEYS[1]
local ID = string.sub(KEY, #P + 3)
local FIELDS = {'la', 'ttl', 'born', 'hb', 'aw', 'st', 'lw', 'acc', 'v', 'm', 'p', 'x', 'a', 'dl'}
local CLAIMED = {}

local function fetch(key)
  return redis.call('HMGET', key, unpack(FIELDS))
end

local function expired(f)
  return NOW - tonumber(f[1]) > tonumber(f[2])
end

-- a TTL the store accepts (the client checks it too): every script checks it before its first
-- write, so a refused value never leaves a session half written
local function bad_ttl(v)
  local t = tonumber(v)
  return not t or t ~= t or t <= 0 or t > MAX_TTL
end

-- milliseconds as an integer string: tostring would write a large one as 1e+15, which
-- PEXPIRE refuses
local function ms(x)
  return string.format('%d', x)
end

-- the key lives until the deadline plus the grace (in real milliseconds from now)
local function pexpire(key, la, ttl)
  local left = math.ceil((la + ttl - NOW) * 1000)
  if left < 0 then left = 0 end
  redis.call('PEXPIRE', key, ms(left + GRACE))
end

-- remove a session for `reason`; `f` its fields, or false when Redis had already dropped them
local function claim(id, reason, f)
  redis.call('DEL', P .. 's:' .. id)
  redis.call('ZREM', EXP, id)
  redis.call('ZREM', HB, id)
  redis.call('HINCRBY', STATS, reason, 1)
  redis.call('PUBLISH', P .. 'ev:' .. id, cmsgpack.pack({NOW_S, 'end', reason}))
  -- every instance's routers (store.on_ended): the id and the incarnation that ended
  redis.call('PUBLISH', P .. 'ended', cmsgpack.pack({id, f and f[3] or false}))
  CLAIMED[#CLAIMED + 1] = {id, reason, f}
end

-- the live session's fields, or nil (an expired one is claimed on the way)
local function live()
  local f = fetch(KEY)
  if not f[1] then
    if redis.call('ZSCORE', EXP, ID) then claim(ID, 'expired', false) end
    return nil
  end
  if expired(f) then
    claim(ID, 'expired', f)
    return nil
  end
  return f
end

-- both indexes and the key's expiry after a change of la, ttl, aw or hb; the deadline filed
-- (f[14], field dl) is written by the caller's own HSET when `written`, else here
local function reindex(f, written)
  local la, ttl = tonumber(f[1]), tonumber(f[2])
  f[14] = tostring(la + ttl)
  if not written then redis.call('HSET', KEY, 'dl', f[14]) end
  redis.call('ZADD', EXP, la + ttl, ID)
  if HBT then  -- without a heartbeat timeout the hb index is never used
    if f[5] == '1' then
      redis.call('ZADD', HB, tonumber(f[4]) + HBT, ID)
    else
      redis.call('ZREM', HB, ID)
    end
  end
  pexpire(KEY, la, ttl)
end

-- an access: the TTL restarts. The expiry index and the key's expiry are moved only once the
-- deadline has moved SLACK seconds past the one filed (dl): the index then holds a lower bound
-- of each deadline (a sweep re-files a live session it finds early), and the key still outlives
-- its deadline by at least GRACE - SLACK. Two calls fewer on a hot session's every access.
local function touch(f)
  f[1] = NOW_S
  f[8] = tostring((tonumber(f[8]) or 0) + 1)
  local ttl = tonumber(f[2])
  local deadline = NOW + ttl
  if deadline - (tonumber(f[14]) or 0) > SLACK then
    f[14] = tostring(deadline)
    redis.call('HSET', KEY, 'la', NOW_S, 'acc', f[8], 'dl', f[14])
    redis.call('ZADD', EXP, deadline, ID)
    redis.call('PEXPIRE', KEY, ms(math.ceil(ttl * 1000) + GRACE))
  else
    redis.call('HSET', KEY, 'la', NOW_S, 'acc', f[8])
  end
end

local function bump(f)
  f[9] = tostring(redis.call('HINCRBY', KEY, 'v', 1))
end

local function emit(kind, a, b)
  redis.call('PUBLISH', P .. 'ev:' .. ID, cmsgpack.pack({NOW_S, kind, a, b}))
end

-- sweep: claim up to n sessions whose deadline (or heartbeat deadline) passed
local function reclaim(n)
  local seen = 0
  local ids = redis.call('ZRANGEBYSCORE', EXP, '-inf', '(' .. NOW_S, 'LIMIT', 0, n)
  for _, id in ipairs(ids) do
    seen = seen + 1
    local key = P .. 's:' .. id
    local f = fetch(key)
    if not f[1] then
      claim(id, 'expired', false)
    elseif expired(f) then
      claim(id, 'expired', f)
    else  -- touched since it was filed (see touch): file it under its real deadline
      local la, ttl = tonumber(f[1]), tonumber(f[2])
      redis.call('HSET', key, 'dl', tostring(la + ttl))
      redis.call('ZADD', EXP, la + ttl, id)
      pexpire(key, la, ttl)
    end
  end
  if HBT and seen < n then
    ids = redis.call('ZRANGEBYSCORE', HB, '-inf', '(' .. NOW_S, 'LIMIT', 0, n - seen)
    for _, id in ipairs(ids) do
      seen = seen + 1
      local key = P .. 's:' .. id
      local f = fetch(key)
      if not f[1] then
        redis.call('ZREM', HB, id)  -- its data is gone: the expiry index reports it
      elseif f[5] == '1' and NOW - tonumber(f[4]) > HBT then
        claim(id, 'gc', f)
      elseif f[5] == '1' then
        redis.call('ZADD', HB, tonumber(f[4]) + HBT, id)
      else
        redis.call('ZREM', HB, id)
      end
    end
  end
  return seen
end
"""

#: get / peek / touch / exists. ARGV[2]: 'g' touch and return, 'p' return, 't' touch, 'e' neither.
READ = (
    _PRELUDE
    + """
local f = live()
if not f then return cmsgpack.pack({'none', CLAIMED}) end
local mode = ARGV[2]
if mode == 'g' or mode == 't' then touch(f) end
if mode == 'g' or mode == 'p' then return cmsgpack.pack({'ok', f, NOW_S}) end
return cmsgpack.pack({'ok'})
"""
)

#: create / import / get_or_create. ARGV[2] max_sessions, [3] '1' to replace a live one, 'g' to
#: return a live one (touched) instead, '0' neither, [4] reclaim chunk,
#: [5] age of the last access in s (0 for a new session), [6] age of the last heartbeat,
#: then field, value pairs (every field but la, hb and v).
CREATE = (
    _PRELUDE
    + """
for i = 7, #ARGV, 2 do
  if ARGV[i] == 'ttl' and bad_ttl(ARGV[i + 1]) then
    return redis.error_reply('ttl out of range: ' .. ARGV[i + 1])
  end
end
local f = fetch(KEY)
local took = false
if f[1] then
  if ARGV[3] == 'g' and not expired(f) then
    touch(f)
    return cmsgpack.pack({'found', f})
  end
  if expired(f) then
    claim(ID, 'expired', f)
  elseif ARGV[3] == '1' then
    claim(ID, 'deleted', f)
  else
    return cmsgpack.pack({'exists'})
  end
  took = true
elseif redis.call('ZSCORE', EXP, ID) then
  claim(ID, 'expired', false)
  took = true
end
if not took and redis.call('ZCARD', EXP) >= tonumber(ARGV[2]) then
  reclaim(tonumber(ARGV[4]))
  local held = redis.call('ZCARD', EXP)
  if held >= tonumber(ARGV[2]) then
    return cmsgpack.pack({'full', CLAIMED, tostring(held)})
  end
end
local la, hb = NOW_S, NOW_S
if tonumber(ARGV[5]) ~= 0 then la = string.format('%.6f', NOW - tonumber(ARGV[5])) end
if tonumber(ARGV[6]) ~= 0 then hb = string.format('%.6f', NOW - tonumber(ARGV[6])) end
local given = {}
for i = 7, #ARGV, 2 do given[ARGV[i]] = ARGV[i + 1] end
local g = {la, given['ttl'], given['born'], hb, given['aw'], given['st'], given['lw'] or false,
           given['acc'] or '0', '1', given['m'] or false, given['p'] or false,
           given['x'] or false, given['a'] or false, false}
g[14] = tostring(tonumber(la) + tonumber(g[2]))
local args = {'la', la, 'hb', hb, 'v', '1', 'dl', g[14]}
for i = 7, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEY, unpack(args))
reindex(g, true)
redis.call('HINCRBY', STATS, 'created', 1)
return cmsgpack.pack({'ok', CLAIMED, g})
"""
)

#: delete: reply {'deleted' | 'expired' | 'none', claimed}.
DELETE = (
    _PRELUDE
    + """
local f = fetch(KEY)
if f[1] then
  local reason = 'deleted'
  if expired(f) then reason = 'expired' end
  claim(ID, reason, f)
  return cmsgpack.pack({reason, CLAIMED})
end
if redis.call('ZSCORE', EXP, ID) then
  claim(ID, 'expired', false)
  return cmsgpack.pack({'expired', CLAIMED})
end
return cmsgpack.pack({'none', CLAIMED})
"""
)

#: Every other change of one live session; ARGV[2] says which:
#: 'cas' ARGV[3] expected version, [4] accesses delta, then field, value pairs ('-name' deletes)
#: 'pin' ARGV[3] pool, [4] worker id ('' unpins)
#: 'lw' ARGV[3] last worker id ('' clears)
#: 'await' ARGV[3] '1' / '0'
#: 'beat' (heartbeat)
#: 'move' ARGV[3] new state, [4] the input-required state, then the states it may come from
#: 'pub' ARGV[3] the packed data of a "published" event (no touch)
#: 'sub' nothing: whether the session is live (no touch)
CHANGE = (
    _PRELUDE
    + """
local f = live()
if not f then return cmsgpack.pack({'none', CLAIMED}) end
local op = ARGV[2]
if op == 'cas' then
  if f[9] ~= ARGV[3] then return cmsgpack.pack({'conflict'}) end
  for i = 5, #ARGV, 2 do
    if ARGV[i] == 'ttl' and bad_ttl(ARGV[i + 1]) then
      return redis.error_reply('ttl out of range: ' .. ARGV[i + 1])
    end
  end
  -- one HSET for everything: what fn changed, the touch, accesses, the version
  local at = {ttl = 2, born = 3, hb = 4, aw = 5}
  f[1] = NOW_S
  f[8] = tostring((tonumber(f[8]) or 0) + tonumber(ARGV[4]))
  f[9] = tostring(tonumber(f[9]) + 1)
  local sets, dels = {'la', f[1], 'acc', f[8], 'v', f[9]}, {}
  for i = 5, #ARGV, 2 do
    local name = ARGV[i]
    if string.sub(name, 1, 1) == '-' then
      dels[#dels + 1] = string.sub(name, 2)
    else
      sets[#sets + 1] = name
      sets[#sets + 1] = ARGV[i + 1]
      if at[name] then f[at[name]] = ARGV[i + 1] end
    end
  end
  if #dels > 0 then redis.call('HDEL', KEY, unpack(dels)) end
  sets[#sets + 1] = 'dl'
  sets[#sets + 1] = tostring(tonumber(f[1]) + tonumber(f[2]))
  redis.call('HSET', KEY, unpack(sets))
  reindex(f, true)
  return cmsgpack.pack({'ok', NOW_S, f[8], f[9]})
elseif op == 'pub' then
  emit('published', ARGV[3])
  return cmsgpack.pack({'ok'})
elseif op == 'sub' then
  return cmsgpack.pack({'ok'})
end
if op == 'move' then  -- the edge is checked before anything changes
  local ok = false
  for i = 5, #ARGV do if ARGV[i] == f[6] then ok = true end end
  if not ok then return cmsgpack.pack({'illegal', f[6]}) end
end
touch(f)
if op == 'pin' then
  local aff = {}
  if f[13] and f[13] ~= '' then aff = cmsgpack.unpack(f[13]) end
  local kept = {}
  local n = 0
  for pool, worker in pairs(aff) do
    if pool ~= ARGV[3] then kept[pool] = worker; n = n + 1 end
  end
  if ARGV[4] ~= '' then
    kept[ARGV[3]] = ARGV[4]
    n = n + 1
    redis.call('HSET', KEY, 'lw', ARGV[4])
  end
  if n == 0 then
    redis.call('HDEL', KEY, 'a')
  else
    redis.call('HSET', KEY, 'a', cmsgpack.pack(kept))
  end
elseif op == 'lw' then
  if ARGV[3] == '' then
    redis.call('HDEL', KEY, 'lw')
  else
    redis.call('HSET', KEY, 'lw', ARGV[3])
  end
elseif op == 'await' then
  f[5], f[4] = ARGV[3], NOW_S
  redis.call('HSET', KEY, 'aw', f[5], 'hb', NOW_S)
  reindex(f)
elseif op == 'beat' then
  f[4] = NOW_S
  redis.call('HSET', KEY, 'hb', NOW_S)
  reindex(f)
  emit('heartbeat')
elseif op == 'move' then
  local old, new, wait = f[6], ARGV[3], ARGV[4]
  f[6] = new
  if new == wait then
    f[5], f[4] = '1', NOW_S
  elseif old == wait then
    f[5] = '0'
  end
  redis.call('HSET', KEY, 'st', new, 'aw', f[5], 'hb', f[4])
  reindex(f)
  emit('state', old, new)
  bump(f)
  return cmsgpack.pack({'ok', f})
end
bump(f)
return cmsgpack.pack({'ok'})
"""
)

#: sweep: ARGV[2] chunk; reply {claimed, examined}.
SWEEP = (
    _PRELUDE
    + """
local seen = reclaim(tonumber(ARGV[2]))
return cmsgpack.pack({CLAIMED, tostring(seen)})
"""
)

#: ids of the live sessions: reply {id...}.
IDS = (
    _PRELUDE
    + """
-- the index holds lower bounds (see touch): an entry up to SLACK early may still be live
local out = {}
local found = redis.call('ZRANGEBYSCORE', EXP, NOW - SLACK, '+inf', 'WITHSCORES')
for i = 1, #found, 2 do
  local id = found[i]
  if tonumber(found[i + 1]) >= NOW then
    out[#out + 1] = id
  else
    local f = redis.call('HMGET', P .. 's:' .. id, 'la', 'ttl')
    if f[1] and not expired(f) then out[#out + 1] = id end
  end
end
return cmsgpack.pack(out)
"""
)


def _lua_string(text: str) -> str:
    """`text` as a Lua string literal, every byte escaped: safe whatever the prefix holds."""
    return '"' + "".join(f"\\{b}" for b in text.encode()) + '"'


class Scripts:
    """One store's scripts: source and SHA1 of each, by name."""

    NAMES = ("READ", "CREATE", "DELETE", "CHANGE", "SWEEP", "IDS")

    def __init__(self, prefix: str, grace_ms: int, heartbeat_timeout: float | None) -> None:
        hbt = "nil" if heartbeat_timeout is None else repr(float(heartbeat_timeout))
        self.source: dict[str, str] = {}
        self.sha: dict[str, str] = {}
        for name in self.NAMES:
            src = (
                globals()[name]
                .replace("@PREFIX@", _lua_string(prefix))
                .replace("@GRACE@", str(int(grace_ms)))
                .replace("@SLACK@", repr(min(1.0, grace_ms / 2000)))
                .replace("@HBT@", hbt)
                .replace("@MAXTTL@", repr(MAX_TTL))
            )
            self.source[name] = src
            self.sha[name] = hashlib.sha1(src.encode()).hexdigest()


def build(prefix: str, grace_ms: int, heartbeat_timeout: float | None) -> Scripts:
    """The scripts of a store with key prefix `prefix` (e.g. ``{aiotp}:``)."""
    return Scripts(prefix, grace_ms, heartbeat_timeout)
