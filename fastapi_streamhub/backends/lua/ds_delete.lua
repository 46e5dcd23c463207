-- Delete a Durable Streams stream and tell its live readers ('D').
-- KEYS: ds record, data, producers   ARGV: sid, pub, data_ch
-- Returns 1 when the stream existed.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call(ARGV[2], ARGV[3], record('D', ARGV[1], '0'))
return 1
