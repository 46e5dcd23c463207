-- Store a steering message for the producer of the current generation, and wake it.
-- KEYS: meta, log, lease, msgs, msgkeys
-- ARGV: sid, json, idempotency key ('' = none), retention_ms, pub, data_ch, ctl_ch,
--   max_messages, max_messages_bytes (per generation)
-- Returns {} for an unknown session (nothing is created), {'ok', gen, seq, duplicate (0/1)}
-- when stored (now or, under the same key, before), {'closed', gen, state}, or
-- {'full', gen, 'count'|'bytes'} when the generation already holds as many messages or bytes
-- as it may.
local meta, log, lease, msgs, msgkeys = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local sid, key, retention = ARGV[1], ARGV[3], tonumber(ARGV[4])
local m = redis.call('HMGET', meta, 'gen', 'state', 'q', 'qb')
if not m[1] then return {} end
if key ~= '' then
  -- A retry of a message whose answer was lost gets the first outcome, whatever the state now.
  local seen = redis.call('HGET', msgkeys, key)
  if seen then
    local dash = string.find(seen, '-', 1, true)
    return {'ok', string.sub(seen, 1, dash - 1), string.sub(seen, dash + 1), 1}
  end
end
local state = m[2]
if state == 'active' and redis.call('EXISTS', lease) == 0 then
  finish(meta, log, lease, ARGV[5], ARGV[6], sid, m[1], 'failed', 'lease_expired', now_ms(),
    retention)
  state = 'failed'
end
if state ~= 'active' then return {'closed', m[1], state} end
-- The counts live in the record, which a claim rewrites: each generation has its own budget.
if (tonumber(m[3]) or 0) >= tonumber(ARGV[8]) then return {'full', m[1], 'count'} end
if (tonumber(m[4]) or 0) + #ARGV[2] > tonumber(ARGV[9]) then return {'full', m[1], 'bytes'} end
redis.call('HINCRBY', meta, 'qb', #ARGV[2])
-- The sequence lives in the record, which the keeper keeps alive while the generation runs (the
-- messages' keys only live `retention` after the last message): ids never go back, so a
-- producer's cursor never skips a message. The record is rewritten by a claim: each generation
-- counts from 1.
local seq = redis.call('HINCRBY', meta, 'q', 1)
local id = m[1] .. '-' .. int(seq)
-- Messages of earlier generations are nobody's any more: trimmed as this one is added.
redis.call('XADD', msgs, 'MINID', m[1] .. '-0', id, 'd', ARGV[2])
redis.call('PEXPIRE', msgs, retention)
if key ~= '' then
  redis.call('HSET', msgkeys, key, id)
  redis.call('PEXPIRE', msgkeys, retention)
end
redis.call(ARGV[5], ARGV[7], record('G', sid, m[1] .. ':' .. int(seq)))
return {'ok', m[1], int(seq), 0}
