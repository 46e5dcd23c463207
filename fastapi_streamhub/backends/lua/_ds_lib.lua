-- Durable Streams helpers, prepended (after _lib.lua) to the ds_*.lua scripts.
-- KEYS of every ds script: [1] the record (hash), [2] the data (string), [3] the producers
-- (hash, producer id -> '<epoch>:<last seq>'); one hash tag, so one cluster slot.
-- Record fields: ct (content type), ttl (seconds or ''), exp (Expires-At text or ''), expms
-- (its Unix ms or ''), cl0 ('1' when created closed), closed ('1' once closed), gone ('1' once
-- soft-deleted), fork (a fork's origin as asked, '' otherwise), src (a fork's source id), rc
-- (how many forks of it live), seq (the last Stream-Seq). The data is the stream's bytes; its
-- length is the tail offset.

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
          int(a or 0), int(b or 0), r[7], r[8]}
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
local function ds_touch(r, retention_ms)
  for k = 1, 3 do
    if r[4] ~= '' then
      redis.call('PEXPIREAT', KEYS[k], r[4])
    elseif r[2] ~= '' then
      redis.call('PEXPIRE', KEYS[k], tonumber(r[2]) * 1000)
    else
      redis.call('PEXPIRE', KEYS[k], retention_ms)
    end
  end
end

-- a > b comparing bytes (Lua's `<` on strings follows the server's locale collation).
local function bytes_greater(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end
