-- Fan-in: a producer ends its own part; the session goes on until its owner closes it.
-- KEYS: meta   ARGV: gen, name, token, last
-- `last` ('' = no check) is the sequence number of the part's last batch as its producer counts
-- them. A part that ends short of it (a batch was lost) is marked 'x' instead of 'e', and
-- close.lua stores the session as failed rather than done or cancelled.
-- Returns {'ok'} (also when the part or the session has ended already), {'part', 'replaced' |
-- 'not_admitted'} or a refusal.
local field = 'f:' .. ARGV[2]
local m = redis.call('HMGET', KEYS[1], 'gen', 'state', 'reason', field)
if m[1] == ARGV[1] and m[2] ~= 'active' then return {'ok'} end
local refused = refusal(m, ARGV[1])
if refused then return refused end
local part = part_of(m[4])
if not part then return {'part', 'not_admitted'} end
if part.token ~= ARGV[3] then return {'part', 'replaced'} end
if part.state == 'o' then
  local ended = 'e'
  if ARGV[4] ~= '' and part.seq ~= ARGV[4] then
    ended = 'x'
    -- The first short part, for close.lua (one field: no scan of the parts at close).
    if not redis.call('HGET', KEYS[1], 'short') then
      redis.call('HSET', KEYS[1], 'short', ARGV[2])
    end
  end
  redis.call('HSET', KEYS[1], field, ended .. string.sub(m[4], 2))
end
return {'ok'}
