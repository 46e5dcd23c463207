-- Fail generation `gen` if its producer's lease has lapsed (whoever notices calls this).
-- KEYS: meta, log, lease   ARGV: sid, gen, retention_ms, pub, data_ch, ctl_ch
-- Returns the current generation and state, or {} for an unknown session.
local meta = KEYS[1]
local m = redis.call('HMGET', meta, 'gen', 'state')
if not m[1] then return {} end
if m[1] == ARGV[2] and m[2] == 'active' and redis.call('EXISTS', KEYS[3]) == 0 then
  finish(meta, KEYS[2], KEYS[3], ARGV[4], ARGV[5], ARGV[1], m[1], 'failed',
    'lease_expired', now_ms(), tonumber(ARGV[3]))
  redis.call(ARGV[4], ARGV[6], record('L', ARGV[1], m[1] .. ':lease_expired'))
  return {m[1], 'failed'}
end
return {m[1], m[2]}
