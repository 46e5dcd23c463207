-- Replace the session's metadata (JSON) and publish it live.
-- KEYS: meta   ARGV: sid, gen, json, pub, data_ch
-- Returns {'ok'} or a refusal.
local m = redis.call('HMGET', KEYS[1], 'gen', 'state', 'reason')
local refused = refusal(m, ARGV[2])
if refused then return refused end
redis.call('HSET', KEYS[1], 'md', ARGV[3], 'updated', int(now_ms()))
redis.call(ARGV[4], ARGV[5], record('M', ARGV[1], ARGV[2] .. ':' .. ARGV[3]))
return {'ok'}
