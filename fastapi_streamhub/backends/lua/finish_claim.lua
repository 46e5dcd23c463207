-- on_finish: claim running the hook of generation `gen` for `ttl_ms` (see Backend.claim_finish).
-- KEYS: meta, kept   ARGV: gen, token, ttl_ms
-- Fields: 'settled' ('1' once the hook of the record's generation ran), 'finisher'
-- ('<token>:<until ms>', the claim); a new generation's claim.lua deletes the record (keeping
-- it in `kept` as '<gen>:<field>' when its hook is expected and unsettled), so both always
-- belong to the record's generation. A kept generation is never settled: settling drops it.
-- Returns 'claimed', 'busy', 'settled' or 'gone'.
local key, field = KEYS[1], 'finisher'
local m = redis.call('HMGET', KEYS[1], 'gen', 'settled', 'finisher')
if not m[1] or m[1] ~= ARGV[1] then
  local k = redis.call('HMGET', KEYS[2], ARGV[1] .. ':state', ARGV[1] .. ':finisher')
  if not k[1] then return 'gone' end
  key, field = KEYS[2], ARGV[1] .. ':finisher'
  m = {ARGV[1], false, k[2]}
end
if m[2] then return 'settled' end
local now = now_ms()
if m[3] then
  local token, until_ms = string.match(m[3], '^(.*):(%d+)$')
  if token ~= ARGV[2] and tonumber(until_ms) > now then return 'busy' end
end
redis.call('HSET', key, field, ARGV[2] .. ':' .. int(now + tonumber(ARGV[3])))
return 'claimed'
