-- Shared helpers, prepended to every script when it is loaded (see backends/redis.py).
-- Keys and channels arrive as KEYS, data as ARGV; nothing is ever pasted into script text.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(x)
  return string.format('%d', x)
end

-- Finish the current generation: state, in-band end marker, live end message.
-- meta, log, data_ch: keys; pub: PUBLISH or SPUBLISH.
local function finish(meta, log, data_ch, pub, gen, n, state, reason, now, retention)
  redis.call('HSET', meta, 'state', state, 'reason', reason, 'updated', now)
  redis.call('HDEL', meta, 'cancel')
  redis.call('XADD', log, gen .. '-' .. int(n + 1), 'e', state .. '\n' .. reason)
  redis.call('PEXPIRE', meta, retention)
  redis.call('PEXPIRE', log, retention)
  redis.call(pub, data_ch, 'E' .. gen .. ':' .. state .. '\n' .. reason)
end

-- Why a producer of generation `gen` may not write, or nil when it may.
-- m: HMGET meta gen state reason
local function refusal(m, gen)
  if not m[1] then return {'gone'} end
  if m[1] ~= gen then return {'stale'} end
  if m[2] ~= 'active' then return {'closed', m[2], m[3] or ''} end
  return nil
end
