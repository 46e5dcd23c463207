-- Append a batch of chunks, give each the next offset, publish the batch live.
-- KEYS: meta, log, data_ch   ARGV: gen, writer, seq, retention_ms, maxlen (0 = none), pub, payload...
-- Returns {first_offset, cancel (0/1)} or a refusal {'stale'|'closed'|'gone', ...}.
local meta, log = KEYS[1], KEYS[2]
local gen = ARGV[1]
local wkey = 'w:' .. ARGV[2]
local m = redis.call('HMGET', meta, 'gen', 'state', 'reason', 'n', 'cancel', wkey)
if m[1] == gen and m[6] then
  -- A retry of a batch that was applied but whose reply was lost: answer as the first time.
  local sep = string.find(m[6], ':', 1, true)
  if string.sub(m[6], 1, sep - 1) == ARGV[3] then
    return {tonumber(string.sub(m[6], sep + 1)), m[5] and 1 or 0}
  end
end
local refused = refusal(m, gen)
if refused then return refused end
local n = tonumber(m[4])
local first = n + 1
local maxlen = tonumber(ARGV[5])
local parts = {}
local count = #ARGV - 6
for i = 1, count do
  local payload = ARGV[i + 6]
  local id = gen .. '-' .. int(n + i)
  if maxlen > 0 then
    redis.call('XADD', log, 'MAXLEN', '~', maxlen, id, 'd', payload)
  else
    redis.call('XADD', log, id, 'd', payload)
  end
  parts[i] = #payload .. ':' .. payload
end
redis.call('HSET', meta, 'n', int(n + count), 'updated', int(now_ms()), wkey, ARGV[3] .. ':' .. int(first))
if n == 0 then redis.call('PEXPIRE', log, tonumber(ARGV[4])) end
redis.call(ARGV[6], KEYS[3], 'C' .. gen .. ':' .. int(first) .. ':' .. count .. '\n' .. table.concat(parts))
return {first, m[5] and 1 or 0}
