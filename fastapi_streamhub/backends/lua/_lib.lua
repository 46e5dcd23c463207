-- Shared helpers, prepended to every script when it is loaded (see backends/redis.py).
-- Keys arrive as KEYS, data as ARGV; nothing is ever pasted into script text. Every key a script
-- touches is one of its KEYS (all in one cluster slot), so Redis Cluster can route and redirect it.
-- The lease key holds the generation that owns it ('<gen>', or '<gen>:c' once a cancel was asked).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function int(x)
  return string.format('%d', x)
end

-- One record of a bus message: tag, then the session id and the body, each length-prefixed.
local function record(tag, sid, body)
  return tag .. #sid .. ':' .. sid .. #body .. ':' .. body
end

-- The live record of a batch: its chunks ('C'), or when that is over `limit` bytes a notice
-- that they are stored ('S', '<gen>:<last offset>'): readers fetch them from the log, so no
-- pub/sub message outgrows Redis' output buffer limit of the instances that receive it.
local function live_record(sid, gen, first, last, value, limit)
  if #value + #sid + 64 > limit then return record('S', sid, gen .. ':' .. int(last)) end
  return record('C', sid, gen .. ':' .. int(first) .. ':' .. value)
end

-- Offset of the last chunk of generation `gen` in the log (0 before the first chunk).
-- Entry ids are '<gen>-<offset of the last chunk in the entry>'; the start marker is '<gen>-0'.
local function last_offset(log, gen)
  local top = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  if #top == 0 then return 0 end
  local id = top[1][1]
  local dash = string.find(id, '-', 1, true)
  if string.sub(id, 1, dash - 1) ~= gen then return 0 end
  local offset = tonumber(string.sub(id, dash + 1))
  if top[1][2][1] == 'e' then return offset - 1 end  -- the end marker sits one past the last chunk
  return offset
end

-- Finish generation `gen`: state, in-band end marker, no lease, live end message.
-- pub: PUBLISH or SPUBLISH; ch: the data channel.
local function finish(meta, log, lease, pub, ch, sid, gen, state, reason, now, retention)
  local n = last_offset(log, gen)
  -- The count is kept in the record too: a reader can tell a lost log from an empty one.
  redis.call('HSET', meta, 'state', state, 'reason', reason, 'updated', int(now), 'n', int(n))
  redis.call('HDEL', meta, 'cancel')
  redis.call('XADD', log, gen .. '-' .. int(n + 1), 'e', state .. '\n' .. reason)
  redis.call('DEL', lease)
  redis.call('PEXPIRE', meta, retention)
  redis.call('PEXPIRE', log, retention)
  redis.call(pub, ch, record('E', sid, gen .. ':' .. int(n + 1) .. ':' .. state .. '\n' .. reason))
end

-- Why a producer of generation `gen` may not write, or nil when it may.
-- m: HMGET meta gen state reason
local function refusal(m, gen)
  if not m[1] then return {'gone'} end
  if m[1] ~= gen then return {'stale'} end
  if m[2] ~= 'active' then return {'closed', m[2], m[3] or ''} end
  return nil
end

-- The session record: {gen, state, reason, n, md, created, updated, cancel, lease_ttl_ms, now}.
local function describe(meta, log, lease)
  local r = redis.call('HMGET', meta, 'gen', 'state', 'reason', 'n', 'md', 'created', 'updated',
    'cancel')
  if not r[1] then return {} end
  if r[2] == 'active' or not r[4] then r[4] = int(last_offset(log, r[1])) end
  r[9] = redis.call('PTTL', lease)
  r[10] = int(now_ms())
  r[11] = redis.call('HGET', meta, 'turn')
  return r
end

-- Fan-in: a producer's part, from its record field '<o|e>:<token>:<seq>:<first>:<last>'
-- (see admit.lua), or nil when that producer was not admitted.
local function part_of(value)
  if not value then return nil end
  local state, token, seq, first = string.match(value, '^(%a):([^:]*):(%d+):(%d+):%d+$')
  return {state = state, token = token, seq = seq, first = first}
end

-- on_finish: the fields of a replaced generation's record that `kept` holds (as '<gen>:<field>'),
-- and how many generations it keeps at most (KEPT_GENERATIONS in backends/base.py).
local KEPT_FIELDS = {'state', 'reason', 'md', 'n', 'created', 'updated', 'finisher'}
local KEPT_MAX = 3

-- The generations `kept` holds, oldest first.
local function kept_list(kept)
  local list = {}
  local gens = redis.call('HGET', kept, 'gens')
  if gens then for g in string.gmatch(gens, '%d+') do list[#list + 1] = g end end
  return list
end

-- Drop kept generation `gen` (its fields, its entries in `klog`); both keys go with the last.
local function drop_kept(kept, klog, gen)
  local list, rest = kept_list(kept), {}
  for _, g in ipairs(list) do if g ~= gen then rest[#rest + 1] = g end end
  if #rest == #list then return 0 end
  if #rest == 0 then
    redis.call('DEL', kept, klog)
    return 1
  end
  for _, name in ipairs(KEPT_FIELDS) do redis.call('HDEL', kept, gen .. ':' .. name) end
  redis.call('HSET', kept, 'gens', table.concat(rest, ' '))
  while true do
    local entries = redis.call('XRANGE', klog, gen .. '-0', gen .. '-18446744073709551615',
      'COUNT', 100)
    if #entries == 0 then break end
    for _, entry in ipairs(entries) do redis.call('XDEL', klog, entry[1]) end
  end
  return 1
end
