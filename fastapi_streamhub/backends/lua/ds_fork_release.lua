-- One fork of a source is gone (deleted, expired, or its create did not happen): forget it; a
-- soft-deleted source whose last fork that was is deleted, and its own source is answered so
-- that the caller releases it in turn. Releasing a fork the source does not count (released
-- already) changes nothing.
-- KEYS: the source's ds record, data, producers   ARGV: the fork's id
-- Returns {'kept'} or {'deleted', its source id or ''}.
if redis.call('HDEL', KEYS[1], 'f:' .. ARGV[1]) == 0 then return {'kept'} end
local left = redis.call('HINCRBY', KEYS[1], 'rc', -1)
if left > 0 or redis.call('HGET', KEYS[1], 'gone') ~= '1' then return {'kept'} end
local src = redis.call('HGET', KEYS[1], 'src') or ''
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {'deleted', src}
