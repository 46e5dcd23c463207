-- Create a Durable Streams stream, or compare with the existing one.
-- KEYS: ds record, data, producers, the session meta of the same id, [the store's index: one
--       Redis; on a cluster it is in another slot and ds_admit.lua ran first]
-- ARGV: ct, ttl, exp, expms, closed ('1'/'0'), initial data (a fork's copied prefix first),
--       retention_ms, fork origin ('' = not a fork), source id ('' = not a fork), sid, max
--       streams ('' = no limit)
-- Returns ds_reply('created' | 'exists' | 'conflict', ...), or {'full'} (nothing created).
if redis.call('EXISTS', KEYS[4]) == 1 then return {'conflict'} end
local r = ds_record()
if r then
  local same = r[7] == '0' and r[1] == ARGV[1] and r[2] == ARGV[2] and r[3] == ARGV[3]
    and r[5] == ARGV[5] and r[8] == ARGV[8]
  return ds_reply(same and 'exists' or 'conflict', r)
end
if KEYS[5] and ds_admit(KEYS[5], ARGV[10], ARGV[11], 0) == 'full' then return {'full'} end
redis.call('HSET', KEYS[1], 'ct', ARGV[1], 'ttl', ARGV[2], 'exp', ARGV[3], 'expms', ARGV[4],
  'cl0', ARGV[5], 'closed', ARGV[5], 'gone', '0', 'fork', ARGV[8], 'src', ARGV[9], 'rc', 0)
if #ARGV[6] > 0 then redis.call('SET', KEYS[2], ARGV[6]) end
r = ds_record()
ds_touch(r, ARGV[7])
if KEYS[5] then
  redis.call('ZADD', KEYS[5], redis.call('HGET', KEYS[1], 'ix'), ARGV[10])
  ds_bump = ''
end
return ds_reply('created', r)
