-- Ask the producer to stop: durable flag (in the record and in the lease value) plus a live
-- signal. Creates nothing for an unknown id.
-- KEYS: meta, log, lease   ARGV: sid, retention_ms, pub, data_ch, ctl_ch
-- Returns the record like info.lua, or {} for an unknown session.
local meta = KEYS[1]
local m = redis.call('HMGET', meta, 'gen', 'state')
if not m[1] then return {} end
if m[2] == 'active' then
  local lease = KEYS[3]
  if redis.call('EXISTS', lease) == 0 then
    finish(meta, KEYS[2], lease, ARGV[3], ARGV[4], ARGV[1], m[1], 'failed', 'lease_expired',
      now_ms(), tonumber(ARGV[2]))
  else
    redis.call('HSET', meta, 'cancel', '1')
    redis.call('SET', lease, m[1] .. ':c', 'KEEPTTL')
    redis.call(ARGV[3], ARGV[5], record('X', ARGV[1], m[1]))
  end
end
return describe(meta, KEYS[2], KEYS[3])
