-- on_finish: claim running the hook of generation `gen` for `ttl_ms` (see Backend.claim_finish).
-- KEYS: meta   ARGV: gen, token, ttl_ms
-- Fields: 'settled' ('1' once the hook of the record's generation ran), 'finisher'
-- ('<token>:<until ms>', the claim); a new generation's claim.lua deletes the record, so both
-- always belong to the record's generation.
-- Returns 'claimed', 'busy', 'settled' or 'gone'.
local m = redis.call('HMGET', KEYS[1], 'gen', 'settled', 'finisher')
if not m[1] or m[1] ~= ARGV[1] then return 'gone' end
if m[2] then return 'settled' end
local now = now_ms()
if m[3] then
  local token, until_ms = string.match(m[3], '^(.*):(%d+)$')
  if token ~= ARGV[2] and tonumber(until_ms) > now then return 'busy' end
end
redis.call('HSET', KEYS[1], 'finisher', ARGV[2] .. ':' .. int(now + tonumber(ARGV[3])))
return 'claimed'
