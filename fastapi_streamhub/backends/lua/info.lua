-- Read a session's record with the server's clock (for the lease's remaining time).
-- KEYS: meta   ARGV: none
-- Returns {gen, state, reason, n, md, created, updated, cancel, lease, now} (nils when unknown).
local r = redis.call('HMGET', KEYS[1], 'gen', 'state', 'reason', 'n', 'md', 'created', 'updated',
  'cancel', 'lease')
r[10] = int(now_ms())
return r
