-- Finish a generation as done, cancelled or failed.
-- KEYS: meta, log, lease   ARGV: sid, gen, state, reason, retention_ms, pub, data_ch, last
-- `last` ('' = no check) is the producer's claim of what it wrote: the offset of its last chunk,
-- or in a fan-in session (field 'f:', see admit.lua) the sequence number of the owner's last
-- batch. A done or cancelled end the log does not match (or, in a fan-in session, with a part
-- end_part.lua found short) is stored as failed instead: the store, not only the producer,
-- decides that nothing a producer accepted is missing.
-- Returns {'ok', state} (also when this generation was already finished) or a refusal.
local m = redis.call('HMGET', KEYS[1], 'gen', 'state', 'reason', 'f:', 'short')
if m[1] == ARGV[2] and m[2] ~= 'active' then return {'ok', m[2]} end
local refused = refusal(m, ARGV[2])
if refused then return refused end
local state, reason = ARGV[3], ARGV[4]
if ARGV[8] ~= '' and state ~= 'failed' then
  local owner = part_of(m[4])
  local held, unit
  if owner then
    held, unit = tonumber(owner.seq), ' batches'
  else
    held, unit = last_offset(KEYS[2], ARGV[2]), ' chunks'
  end
  if held ~= tonumber(ARGV[8]) then
    state = 'failed'
    reason = 'backend: the store holds ' .. int(held) .. ' of ' .. ARGV[8] .. unit
  elseif m[5] then
    -- A sub-producer's part ended short (end_part.lua): its lost batch fails the session too.
    state = 'failed'
    reason = 'backend: producer ' .. m[5] .. ' lost a write'
  end
end
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[6], ARGV[7], ARGV[1], ARGV[2], state, reason,
  now_ms(), tonumber(ARGV[5]))
return {'ok', state}
