-- A page of a log after a cursor, bounded in entries and in bytes: a reader of a log of big
-- entries holds about max bytes at a time, never `count` of them (the first entry is taken
-- whatever its size). Entries are read a few at a time, so this script holds little more
-- than the page itself, and a log of small entries costs a handful of XRANGE calls.
-- KEYS: log   ARGV: start (an XRANGE start, e.g. '(<gen>-<offset>'), count, max bytes
-- Returns {cut, entry...}: cut is 1 when the page stopped at its byte bound (more may follow).
local log, start = KEYS[1], ARGV[1]
local count, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {0}
local n, size, biggest = 0, 0, 0
while n < count do
  -- As many entries as the biggest one so far says fit, 64 at most.
  local step = 8
  if biggest > 0 then step = math.max(1, math.min(64, math.floor((budget - size) / biggest))) end
  step = math.min(step, count - n)
  local entries = redis.call('XRANGE', log, start, '+', 'COUNT', step)
  for _, entry in ipairs(entries) do
    local bytes = 0
    local fields = entry[2]
    for j = 2, #fields, 2 do bytes = bytes + #fields[j] end
    if n > 0 and size + bytes > budget then
      out[1] = 1
      return out
    end
    n = n + 1
    size = size + bytes
    if bytes > biggest then biggest = bytes end
    out[n + 1] = entry
    start = '(' .. entry[1]
  end
  if #entries < step then return out end
end
return out
