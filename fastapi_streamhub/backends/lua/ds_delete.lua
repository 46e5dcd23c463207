-- Delete a Durable Streams stream and tell its live readers ('D'). While forks of it live it is
-- only soft-deleted: its data goes, its record stays (marked gone, answering 410) until
-- ds_fork_release.lua sees its last fork go.
-- KEYS: ds record, data, producers   ARGV: sid, pub, data_ch
-- Returns {'not_found'}, {'gone'} (already soft-deleted), {'soft'} or {'deleted', source id or
-- ''} (the caller then drops the id from the index and releases the source with
-- ds_fork_release.lua).
local r = redis.call('HMGET', KEYS[1], 'gone', 'rc', 'src')
if not r[1] and not r[2] then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
end
if r[1] == '1' then return {'gone'} end
local outcome
if tonumber(r[2] or '0') > 0 then
  redis.call('HSET', KEYS[1], 'gone', '1')
  redis.call('DEL', KEYS[2], KEYS[3])
  outcome = {'soft'}
else
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  outcome = {'deleted', r[3] or ''}
end
redis.call(ARGV[2], ARGV[3], record('D', ARGV[1], '0'))
return outcome
