-- Fail the session if its producer's lease has lapsed (whoever notices calls this).
-- KEYS: meta, log, data_ch   ARGV: retention_ms, pub
-- Returns the record like info.lua.
local meta = KEYS[1]
local now = now_ms()
local m = redis.call('HMGET', meta, 'gen', 'state', 'lease', 'n')
if m[1] and m[2] == 'active' and tonumber(m[3]) <= now then
  finish(meta, KEYS[2], KEYS[3], ARGV[2], m[1], tonumber(m[4]), 'failed', 'lease_expired', now,
    tonumber(ARGV[1]))
end
local r = redis.call('HMGET', meta, 'gen', 'state', 'reason', 'n', 'md', 'created', 'updated',
  'cancel', 'lease')
r[10] = int(now)
return r
