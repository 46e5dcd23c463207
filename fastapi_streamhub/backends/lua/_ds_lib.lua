-- Durable Streams helpers, prepended (after _lib.lua) to the ds_*.lua scripts.
-- KEYS of every ds script: [1] the record (hash), [2] the data (string), [3] the producers
-- (hash, producer id -> '<epoch>:<last seq>'); one hash tag, so one cluster slot.
-- Record fields: ct (content type), ttl (seconds or ''), exp (Expires-At text or ''), expms
-- (its Unix ms or ''), cl0 ('1' when created closed), closed ('1' once closed), gone ('1' once
-- soft-deleted), fork (a fork's origin as asked, '' otherwise), src (a fork's source id), rc
-- (how many forks of it live), 'f:<fork id>' (one per fork counted in rc), seq (the last
-- Stream-Seq), ix (the score its id has in the store's index of streams: never below its
-- expiry). The data is the stream's bytes; its length is the tail offset.
-- The index (KEYS of ds_admit.lua / ds_index.lua, or ds_create.lua's KEYS[5] on one Redis) is
-- a sorted set of the store's stream ids scored by (an upper bound of) their expiry in Unix ms:
-- members past their score are expired streams, pruned before counting.

-- The index score a touch asked for ('' = the index is already at or above the new expiry).
local ds_bump = ''

local function ds_record()
  local r = redis.call('HMGET', KEYS[1], 'ct', 'ttl', 'exp', 'expms', 'cl0', 'closed', 'gone',
    'fork')
  if not r[1] then return nil end
  r[7] = r[7] or '0'
  r[8] = r[8] or ''
  return r
end

-- The reply every ds script gives about the stream: outcome, tail, closed, then the spec,
-- then two numbers the outcome explains (producer epoch and seq), then gone and fork.
local function ds_reply(outcome, r, a, b)
  return {outcome, redis.call('STRLEN', KEYS[2]), r[6], r[1], r[2], r[3], r[4], r[5],
          int(a or 0), int(b or 0), r[7], r[8], ds_bump}
end

-- A content type's media type: parameters dropped, lower case, trimmed.
local function ds_media(ct)
  return string.match(string.lower(string.match(ct, '^[^;]*')), '^%s*(.-)%s*$')
end

-- Whether a content type is application/json (parameters and case aside).
local function ds_is_json(ct)
  return ds_media(ct) == 'application/json'
end

-- Restart the expiry window of all three keys: Expires-At, else the TTL, else `retention_ms`.
-- When the new expiry passes the record's index score (ix), a new score is set ahead of it by
-- half the window (60 s at most), so that only one touch in that span moves the index, and is
-- answered in ds_bump (the caller sets it in the index; ds_create.lua does on one Redis).
local function ds_touch(r, retention_ms)
  local window, deadline = 0, 0
  if r[4] ~= '' then
    deadline = tonumber(r[4])
  else
    window = r[2] ~= '' and tonumber(r[2]) * 1000 or tonumber(retention_ms)
    deadline = now_ms() + window
  end
  for k = 1, 3 do
    if r[4] ~= '' then
      redis.call('PEXPIREAT', KEYS[k], r[4])
    else
      redis.call('PEXPIRE', KEYS[k], window)
    end
  end
  local ix = tonumber(redis.call('HGET', KEYS[1], 'ix') or '0')
  if deadline > ix then
    ds_bump = int(deadline + math.min(math.floor(window / 2), 60000))
    redis.call('HSET', KEYS[1], 'ix', ds_bump)
  end
end

-- Admit one more stream id into the index: prune the expired members, then 'present' (the id
-- is a member), 'full' (max members; max '' = no limit) or 'added' (scored `hold_ms` ahead).
local function ds_admit(index, sid, max, hold_ms)
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  if redis.call('ZSCORE', index, sid) then return 'present' end
  if max ~= '' and redis.call('ZCARD', index) >= tonumber(max) then return 'full' end
  redis.call('ZADD', index, now + tonumber(hold_ms), sid)
  return 'added'
end

-- a > b comparing bytes (Lua's `<` on strings follows the server's locale collation).
local function bytes_greater(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
