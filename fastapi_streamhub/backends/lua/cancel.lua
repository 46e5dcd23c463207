-- Ask the producer to stop: durable flag plus a live signal. Creates nothing for an unknown id.
-- KEYS: meta, log, data_ch, ctl_ch   ARGV: retention_ms, pub
-- Returns the record like info.lua, or {} for an unknown session.
local meta = KEYS[1]
local now = now_ms()
local m = redis.call('HMGET', meta, 'gen', 'state', 'lease', 'n')
if not m[1] then return {} end
if m[2] == 'active' then
  if tonumber(m[3]) <= now then
    finish(meta, KEYS[2], KEYS[3], ARGV[2], m[1], tonumber(m[4]), 'failed', 'lease_expired', now,
      tonumber(ARGV[1]))
  else
    redis.call('HSET', meta, 'cancel', '1')
    redis.call(ARGV[2], KEYS[4], 'X' .. m[1])
  end
end
local r = redis.call('HMGET', meta, 'gen', 'state', 'reason', 'n', 'md', 'created', 'updated',
  'cancel', 'lease')
r[10] = int(now)
return r
