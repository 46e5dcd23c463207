-- Remove every key of a session, telling its producer and subscribers first.
-- KEYS: meta, log, lease, and any other key of the session   ARGV: sid, pub, data_ch, ctl_ch
-- Returns 1 when the session existed.
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen then
  redis.call('DEL', unpack(KEYS))
  return 0
end
redis.call(ARGV[2], ARGV[4], record('D', ARGV[1], gen))
redis.call(ARGV[2], ARGV[3], record('D', ARGV[1], gen))
redis.call('DEL', unpack(KEYS))
return 1
