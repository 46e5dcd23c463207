-- Claim a session for a new generation.
-- KEYS: meta, log, lease, kept, klog, the Durable Streams record of the same id
-- ARGV: sid, lease_ms, retention_ms, restart (0/1), token, metadata ('' = none), pub, data_ch,
--       ctl_ch, turn ('' = none)
-- With a turn: a generation of the same turn is left alone unless it failed; a live one of
-- another turn ends 'cancelled' with reason 'superseded' (its producer is told 'stale'), and
-- the session is claimed as for a restart.
-- A replaced generation marked 'fin' (expect_finish: a hook is expected) and not 'settled' is
-- kept for its on_finish hook: its record's fields go to `kept`, its log to `klog` (the newest
-- KEPT_MAX kept generations at most); finish_settle.lua drops it.
-- Returns {created (0/1), generation, state}, or {0, 0, 'ds'} when a Durable Streams stream
-- holds the id (it has no producer to replace: never claimed).
local meta, log, lease_key = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', KEYS[6]) == 1 then return {0, 0, 'ds'} end

local function keep(kept, klog, gen)
  local r = redis.call('HMGET', meta, unpack(KEPT_FIELDS))
  local fields = {'gens', ''}
  for i, name in ipairs(KEPT_FIELDS) do
    if r[i] then
      fields[#fields + 1] = gen .. ':' .. name
      fields[#fields + 1] = r[i]
    end
  end
  local list = kept_list(kept)
  list[#list + 1] = gen
  fields[2] = table.concat(list, ' ')
  redis.call('HSET', kept, unpack(fields))
  if redis.call('EXISTS', klog) == 0 then
    if redis.call('EXISTS', log) == 1 then redis.call('RENAME', log, klog) end
  else
    -- Its entries go after those of the older kept generations (their ids are lower).
    local start = '-'
    while true do
      local entries = redis.call('XRANGE', log, start, '+', 'COUNT', 100)
      if #entries == 0 then break end
      for _, entry in ipairs(entries) do
        redis.call('XADD', klog, entry[1], unpack(entry[2]))
        start = '(' .. entry[1]
      end
    end
  end
  for i = 1, #list - KEPT_MAX do drop_kept(kept, klog, list[i]) end
end
local sid, lease, retention = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local turn = ARGV[10] or ''
local now = now_ms()
local m = redis.call('HMGET', meta, 'gen', 'state', 'owner', 'created', 'turn', 'fin', 'settled')
local gen = now
local created = now
if m[1] then
  local state = m[2]
  if state == 'active' then
    if m[3] == ARGV[5] then return {1, m[1], state} end  -- our own claim, retried after a lost reply
    if redis.call('EXISTS', lease_key) == 1 then
      if turn == '' or m[5] == turn then return {0, m[1], state} end
      finish(meta, log, lease_key, ARGV[7], ARGV[8], sid, m[1], 'cancelled', 'superseded',
        now, retention)
      state = 'cancelled'
    else
      finish(meta, log, lease_key, ARGV[7], ARGV[8], sid, m[1], 'failed', 'lease_expired',
        now, retention)
      state = 'failed'
    end
    redis.call(ARGV[7], ARGV[9], record('L', sid, m[1] .. ':stale'))  -- a paused producer stops on waking
  end
  if turn ~= '' then
    if state ~= 'failed' and m[5] == turn then return {0, m[1], state} end
  elseif state ~= 'failed' and ARGV[4] ~= '1' then
    return {0, m[1], state}
  end
  gen = math.max(tonumber(m[1]) + 1, now)
  created = tonumber(m[4]) or now
end
if m[1] and m[6] and not m[7] then keep(KEYS[4], KEYS[5], m[1]) end
redis.call('DEL', meta, log)
redis.call('HSET', meta, 'gen', int(gen), 'state', 'active', 'created', int(created),
  'updated', int(now), 'owner', ARGV[5])
if ARGV[6] ~= '' then redis.call('HSET', meta, 'md', ARGV[6]) end
if turn ~= '' then redis.call('HSET', meta, 'turn', turn) end
-- The start marker: appends use NOMKSTREAM and explicit ids above it, so a stale generation's
-- append fails (its ids are lower) and nothing can recreate a deleted log.
redis.call('XADD', log, int(gen) .. '-0', 's', '')
redis.call('SET', lease_key, int(gen), 'PX', lease)
redis.call('PEXPIRE', meta, retention)
redis.call('PEXPIRE', log, retention)
if m[1] and m[6] and not m[7] then
  redis.call('PEXPIRE', KEYS[4], retention)
  redis.call('PEXPIRE', KEYS[5], retention)
end
return {1, int(gen), 'active'}
