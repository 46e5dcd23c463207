-- Fan-in: a handle (`token`) starts writing the part of an admitted producer. A later join of
-- the same name takes the part over: the earlier handle's writes are refused from then on.
-- KEYS: meta   ARGV: gen, name, token
-- Returns {'ok'}, {'part', 'not_admitted' | 'part_ended'} or a refusal.
local field = 'f:' .. ARGV[2]
local m = redis.call('HMGET', KEYS[1], 'gen', 'state', 'reason', field)
local refused = refusal(m, ARGV[1])
if refused then return refused end
local part = part_of(m[4])
if not part then return {'part', 'not_admitted'} end
if part.state ~= 'o' then return {'part', 'part_ended'} end
if part.token ~= ARGV[3] then  -- a retried join keeps its sequence
  redis.call('HSET', KEYS[1], field, 'o:' .. ARGV[3] .. ':0:0:0')
end
return {'ok'}
