-- Finish a generation as done, cancelled or failed.
-- KEYS: meta, log, lease   ARGV: sid, gen, state, reason, retention_ms, pub, data_ch
-- Returns {'ok', state} (also when this generation was already finished) or a refusal.
local m = redis.call('HMGET', KEYS[1], 'gen', 'state', 'reason')
if m[1] == ARGV[2] and m[2] ~= 'active' then return {'ok', m[2]} end
local refused = refusal(m, ARGV[2])
if refused then return refused end
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[6], ARGV[7], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
  now_ms(), tonumber(ARGV[5]))
return {'ok', ARGV[3]}
