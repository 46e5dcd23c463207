-- Read a session's record with the server's clock and the lease's remaining time.
-- KEYS: meta, log, lease   ARGV: none
-- Returns {gen, state, reason, n, md, created, updated, cancel, lease_pttl_ms, now} or {}.
return describe(KEYS[1], KEYS[2], KEYS[3])
