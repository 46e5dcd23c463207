-- Fan-in: append one batch of one producer of a session that several producers write. The
-- offsets are assigned here, after the top of the log (the single-producer path computes them
-- in the client instead, see append.lua), so every producer's chunks are totally ordered by
-- the session's cursor; the entry and its live record are the same as append.lua's.
-- Exactly once: the part remembers the sequence number and first offset of its last batch; the
-- same batch sent again (the client retried after a lost reply) is answered with its offset and
-- not appended twice. (One batch per producer is in flight at a time, so the last is enough.)
-- KEYS: meta, log
-- ARGV: sid, gen, name, token, seq, count, value, maxlen (0 = no trimming), pub, data_ch,
-- max_publish_bytes
-- Returns {'ok', first offset}, {'part', 'not_admitted' | 'replaced' | 'part_ended'}, {'gone'}
-- or a refusal.
local meta, log, gen = KEYS[1], KEYS[2], ARGV[2]
local field = 'f:' .. ARGV[3]
local m = redis.call('HMGET', meta, 'gen', 'state', 'reason', field)
local refused = refusal(m, gen)
if refused then return refused end
local part = part_of(m[4])
if not part then return {'part', 'not_admitted'} end
if part.token ~= ARGV[4] then return {'part', 'replaced'} end
if part.seq == ARGV[5] then return {'ok', part.first} end
if part.state ~= 'o' then return {'part', 'part_ended'} end
local first = last_offset(log, gen) + 1
local last = first + tonumber(ARGV[6]) - 1
local id = gen .. '-' .. int(last)
local maxlen = tonumber(ARGV[8])
local added
if maxlen > 0 and last > maxlen then
  added = redis.call('XADD', log, 'NOMKSTREAM', 'MINID', gen .. '-' .. int(last - maxlen + 1),
    id, 'c', ARGV[7])
else
  added = redis.call('XADD', log, 'NOMKSTREAM', id, 'c', ARGV[7])
end
if not added then return {'gone'} end
redis.call('HSET', meta, field,
  'o:' .. ARGV[4] .. ':' .. ARGV[5] .. ':' .. int(first) .. ':' .. int(last))
redis.call(ARGV[9], ARGV[10],
  live_record(ARGV[1], gen, first, last, ARGV[7], tonumber(ARGV[11])))
return {'ok', int(first)}
