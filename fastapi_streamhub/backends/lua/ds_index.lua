-- Keep one id's place in the store's index of streams (see _ds_lib.lua): 'set' scores it (a
-- create's real score, replacing its reservation's); 'bump' raises its score (touches may
-- arrive out of order); both add it when missing (a reservation dropped by a racing create);
-- 'drop' removes it (the stream is deleted, or a reserved create did not happen).
-- KEYS: the store's index   ARGV: 'set' | 'bump' | 'drop', sid, score
if ARGV[1] == 'set' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
elseif ARGV[1] == 'bump' then
  redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[2])
else
  redis.call('ZREM', KEYS[1], ARGV[2])
end
return 1
