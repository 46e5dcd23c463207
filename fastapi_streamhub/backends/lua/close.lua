-- Finish a generation as done, cancelled or failed.
-- KEYS: meta, log, data_ch   ARGV: gen, state, reason, retention_ms, pub
-- Returns {'ok', state} (also when this generation was already finished) or a refusal.
local m = redis.call('HMGET', KEYS[1], 'gen', 'state', 'reason', 'n')
if m[1] == ARGV[1] and m[2] ~= 'active' then return {'ok', m[2]} end
local refused = refusal(m, ARGV[1])
if refused then return refused end
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[5], ARGV[1], tonumber(m[4]), ARGV[2], ARGV[3],
  now_ms(), tonumber(ARGV[4]))
return {'ok', ARGV[2]}
