-- Replace the session's metadata (JSON) and publish it live.
-- KEYS: meta, data_ch   ARGV: gen, json, pub
-- Returns {'ok'} or a refusal.
local m = redis.call('HMGET', KEYS[1], 'gen', 'state', 'reason')
local refused = refusal(m, ARGV[1])
if refused then return refused end
redis.call('HSET', KEYS[1], 'md', ARGV[2], 'updated', int(now_ms()))
redis.call(ARGV[3], KEYS[2], 'M' .. ARGV[1] .. ':' .. ARGV[2])
return {'ok'}
