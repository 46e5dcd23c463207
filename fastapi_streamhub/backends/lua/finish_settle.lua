-- on_finish: mark the hook of generation `gen` as run (see Backend.settle), or drop it when the
-- session kept it (claim.lua); the index entry is removed by the caller (the index key is in
-- another cluster slot).
-- KEYS: meta, kept, klog   ARGV: gen
-- Returns 1 when marked or dropped, 0 when the session is gone or holds no such generation.
local g = redis.call('HGET', KEYS[1], 'gen')
if g ~= ARGV[1] then return drop_kept(KEYS[2], KEYS[3], ARGV[1]) end
redis.call('HSET', KEYS[1], 'settled', '1')
redis.call('HDEL', KEYS[1], 'finisher')
return 1
