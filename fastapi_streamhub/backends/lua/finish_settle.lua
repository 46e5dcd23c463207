-- on_finish: mark the hook of generation `gen` as run (see Backend.settle); the index entry is
-- removed by the caller (the index key is in another cluster slot).
-- KEYS: meta   ARGV: gen
-- Returns 1 when marked, 0 when the session is gone or holds another generation.
local g = redis.call('HGET', KEYS[1], 'gen')
if g ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'settled', '1')
redis.call('HDEL', KEYS[1], 'finisher')
return 1
