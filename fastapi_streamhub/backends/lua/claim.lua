-- Claim a session for a new generation.
-- KEYS: meta, log, data_ch   ARGV: lease_ms, retention_ms, restart (0/1), token, metadata ('' = none), pub
-- Returns {created (0/1), generation, state}.
local meta, log = KEYS[1], KEYS[2]
local lease, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local m = redis.call('HMGET', meta, 'gen', 'state', 'lease', 'n', 'owner', 'created')
local gen = now
local created = now
if m[1] then
  local state = m[2]
  if state == 'active' and m[5] == ARGV[4] then
    return {1, m[1], state}  -- our own claim, retried after a lost reply
  end
  if state == 'active' then
    if tonumber(m[3]) > now then return {0, m[1], state} end
    finish(meta, log, KEYS[3], ARGV[6], m[1], tonumber(m[4]), 'failed', 'lease_expired', now, retention)
    state = 'failed'
  end
  if state ~= 'failed' and ARGV[3] ~= '1' then return {0, m[1], state} end
  gen = math.max(tonumber(m[1]) + 1, now)
  created = tonumber(m[6]) or now
end
redis.call('DEL', meta, log)
redis.call('HSET', meta, 'gen', int(gen), 'state', 'active', 'lease', int(now + lease), 'n', 0,
  'created', int(created), 'updated', int(now), 'owner', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', meta, 'md', ARGV[5]) end
redis.call('PEXPIRE', meta, retention)
return {1, int(gen), 'active'}
