-- on_finish: mark generation `gen` as expecting its hook (see Backend.expect_finish), so that a
-- claim replacing it before its hook settled keeps it (claim.lua).
-- KEYS: meta   ARGV: gen
-- Returns 1 when marked, 0 when the session is gone or holds another generation.
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'fin', '1')
return 1
