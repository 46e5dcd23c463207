-- Extend a producer's lease and the retention of its keys.
-- KEYS: meta, log   ARGV: gen, lease_ms, retention_ms
-- Returns {'ok', cancel (0/1)} or a refusal.
local m = redis.call('HMGET', KEYS[1], 'gen', 'state', 'reason', 'cancel')
local refused = refusal(m, ARGV[1])
if refused then return refused end
redis.call('HSET', KEYS[1], 'lease', int(now_ms() + tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
return {'ok', m[4] and 1 or 0}
