-- Replace the log of a finished generation by its folded form (ARCHITECTURE.md, "Compaction").
-- The client read the log and folded it (backends/_compact.py): folding in Lua would hold Redis
-- for ~2 us per entry (a 10,000-entry log: ~20 ms), while this swap only writes the result.
-- A finished generation's log never changes (appends are refused below its end marker), so
-- the log is still the one the client read when the generation, the entry count and the top
-- entry are unchanged and nobody folded it meanwhile; then it is swapped in one step, keeping
-- its TTL: a reader sees the log before or after, and either holds the same chunks at the
-- same offsets. The record's `compact` field names the folded generation (one fold each).
-- KEYS: meta, log
-- ARGV: gen, entries (XLEN expected), end id, end value, then id, value of every slice
-- Returns 1 when swapped, 0 when the log changed, is not finished, or was folded already.
local meta, log, gen = KEYS[1], KEYS[2], ARGV[1]
local m = redis.call('HMGET', meta, 'gen', 'state', 'compact')
if m[1] ~= gen or not m[2] or m[2] == 'active' or m[3] == gen then return 0 end
if redis.call('XLEN', log) ~= tonumber(ARGV[2]) then return 0 end
local top = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
if #top == 0 or top[1][1] ~= ARGV[3] then return 0 end
local ttl = redis.call('PTTL', log)
redis.call('UNLINK', log)
for i = 5, #ARGV, 2 do
  redis.call('XADD', log, ARGV[i], 'c', ARGV[i + 1])
end
redis.call('XADD', log, ARGV[3], 'e', ARGV[4])
if ttl > 0 then redis.call('PEXPIRE', log, ttl) end
redis.call('HSET', meta, 'compact', gen)
return 1
