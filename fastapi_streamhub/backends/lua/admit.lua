-- Fan-in: admit a named producer into generation `gen` of the session. The record holds one
-- field per producer of the session, 'f:<name>' = '<o|e>:<token>:<seq>:<first>:<last>': open or
-- ended, the token of the handle that writes it (set by join.lua), and the sequence number and
-- offsets of its last batch (append_shared.lua's lost-reply dedupe). The owner's own part is
-- 'f:' (no name; its token is empty: one owner per generation, fenced by the generation).
-- KEYS: meta   ARGV: gen, name
-- Returns {'ok'} (also when the name was admitted already) or a refusal.
-- (HMGET + HSET rather than HSETNX: the commands of the documented ACL suffice.)
local m = redis.call('HMGET', KEYS[1], 'gen', 'state', 'reason', 'f:' .. ARGV[2], 'f:')
local refused = refusal(m, ARGV[1])
if refused then return refused end
if not m[4] then redis.call('HSET', KEYS[1], 'f:' .. ARGV[2], 'o::0:0:0') end
if not m[5] then redis.call('HSET', KEYS[1], 'f:', 'o::0:0:0') end
return {'ok'}
