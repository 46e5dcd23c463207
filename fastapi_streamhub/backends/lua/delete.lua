-- Remove every key of a session, telling its producer and subscribers first.
-- KEYS: meta, log, data_ch, ctl_ch   ARGV: pub
-- Returns 1 when the session existed.
local existed = redis.call('EXISTS', KEYS[1])
if existed == 1 then
  redis.call(ARGV[1], KEYS[4], 'D')
  redis.call(ARGV[1], KEYS[3], 'D')
end
redis.call('DEL', KEYS[1], KEYS[2])
return existed
